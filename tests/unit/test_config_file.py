"""Editing named tables in place: whole files before and after."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfgw.config_file import delete_table, update_table
from tfgw.errors import ConfigError, InputError

TABLE = ("otel", "targets", "c")


def edited(tmp_path: Path, source: str, values: dict[str, object]) -> str:
    path = tmp_path / "t.toml"
    path.write_text(source)
    update_table(path, TABLE, values)
    return path.read_text()


def test_update_replaces_values_keeps_comments_and_their_column(tmp_path: Path) -> None:
    source = (
        "[otel.targets.c]\n"
        'kind = "otlp"\n'
        'endpoint = "http://c:4318/#x"        # a # in the value\n'
        'project = "a-rather-long-project-name"  # short column\n'
        "enabled = true\n"
        "\n"
        "# about what follows\n"
        "[tracing]\n"
    )
    assert edited(tmp_path, source, {"endpoint": "http://d:4318", "project": "p", "timeout": 2.5}) == (
        "[otel.targets.c]\n"
        'kind = "otlp"\n'
        'endpoint = "http://d:4318"           # a # in the value\n'
        'project = "p"                           # short column\n'
        "enabled = true\n"
        "timeout = 2.5\n"
        "\n"
        "# about what follows\n"
        "[tracing]\n"
    )


def test_update_removes_a_key_set_to_none_and_handles_multiline_values(tmp_path: Path) -> None:
    source = (
        '[otel.targets.c]\nkind = "otlp"\nproject = """\nmulti\nline"""\nendpoint = "http://c"\n'
        "enabled = true\n"
    )
    assert edited(tmp_path, source, {"project": "p", "enabled": None}) == (
        '[otel.targets.c]\nkind = "otlp"\nproject = "p"\nendpoint = "http://c"\n'
    )


def test_update_turns_a_header_sub_table_into_an_inline_table(tmp_path: Path) -> None:
    source = (
        '[otel.targets.c]\nkind = "otlp"\nendpoint = "http://c"\n\n'
        '[otel.targets.c.headers]\nx-a = "1"\n\n[tracing]\nproject = "p"\n'
    )
    assert edited(tmp_path, source, {"headers": {"x-a": "2", "x b": "3"}}) == (
        '[otel.targets.c]\nkind = "otlp"\nendpoint = "http://c"\nheaders = { x-a = "2", "x b" = "3" }\n'
        '\n[tracing]\nproject = "p"\n'
    )


def test_update_and_delete_refuse_a_table_not_written_as_one(tmp_path: Path) -> None:
    source = '[otel]\ntargets = { c = { kind = "otlp", endpoint = "http://c" } }\n'
    path = tmp_path / "t.toml"
    path.write_text(source)
    message = (
        f"{path}: cannot edit [otel.targets.c] in place (it is not written as one [otel.targets.c] table); "
        "edit the file by hand"
    )
    with pytest.raises(InputError) as info:
        update_table(path, TABLE, {"project": "p"})
    assert (info.value.message, info.value.exit_code) == (message, 2)
    with pytest.raises(InputError) as info:
        delete_table(path, TABLE)
    assert info.value.message == message
    assert path.read_text() == source


def test_an_invalid_result_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    source = '[otel.targets.c]\nkind = "otlp"\nendpoint = "http://c"\n'
    path.write_text(source)
    with pytest.raises(ConfigError) as info:
        update_table(path, TABLE, {"compression": "br"})
    assert info.value.message == f"{path}: otel.targets.c.compression: must be one of gzip, none, got 'br'"
    assert path.read_text() == source


def test_delete_takes_sub_tables_too_and_keeps_the_comments_around(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        "# top\n\n# the collector\n"
        '[otel.targets.c]\nkind = "otlp"\nendpoint = "http://c"\n\n'
        '[otel.targets.c.headers]\nx-a = "1"\n# next: tracing\n\n'
        '[tracing]\nproject = "p"\n'
    )
    delete_table(path, TABLE)
    assert path.read_text() == '# top\n\n# the collector\n\n# next: tracing\n\n[tracing]\nproject = "p"\n'
