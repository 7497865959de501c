"""The index of recorded calls: the LLM spans of trace files, by the request they answered.

A `[providers.NAME] kind = "recorded"` provider answers from this index (`tfgw.providers.recorded`).
It is built once, at start, from the files and directories given (read by `tfgw.tracing.otlp`, the
one reader of trace files: `.gz`, directories, the torn-last-line rule):

- each LLM span (CLIENT, `gen_ai.operation.name` `chat` or `embeddings`) that did not fail, with its
  request (`input.value`) and its answer (`output.value`, which must have ended: a stream the client
  left is no answer) is one `Recording`;
- its key is the normalised chat-completions form of the request (`normalise`): a span of
  `POST /v1/messages` or `POST /v1/responses` holds the client's body in that API's format, which is
  translated as the gateway translates it for a chat-completions provider, so it matches the call
  the recorded provider gets on any route;
- the answer is kept as the recorded JSON text and parsed only when it is served.

Requests that match: the same normalised request (`normalise`: every field of the body but the
ones in `IGNORED`, `null` values dropped, `max_completion_tokens` read as `max_tokens`, a `stop`
string as a one-item list, `n = 1` as no `n`). `model` is the name the client asked for (the body's
`model`), not the provider's. Several recordings of one request are served in the order they were
recorded, round and round; one recorded in the same mode (stream or not) is preferred.

A request that matches none is told which recording is closest (the same model first, then the
longest run of the same messages from the start) and the first field where they differ
(`Recordings.closest`), for which that one recording is read again from its file.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from tfgw.errors import BadRequestError
from tfgw.formats import messages as messages_format
from tfgw.formats import responses as responses_format
from tfgw.providers.anthropic import from_messages_response
from tfgw.providers.responses import from_response
from tfgw.tracing import semconv as sc
from tfgw.tracing.otlp import KIND_CLIENT, spans_of
from tfgw.tracing.otlp.files import is_torn, open_trace_file, trace_files

__all__ = [
    "IGNORED",
    "Recording",
    "Recordings",
    "first_difference",
    "load",
    "normalise",
    "request_key",
]

log = logging.getLogger("tfgw.recorded")

#: request fields that do not change the answer, left out of the match
IGNORED: Final = frozenset(
    ("stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key",
     "safety_identifier")
)  # fmt: skip
#: the fields compared first when saying where a request differs from the closest recording
FIRST_FIELDS: Final = ("model", "messages")

CHAT, MESSAGE, RESPONSE, EMBEDDINGS = 0, 1, 2, 3
_CLIENT_KINDS = (KIND_CLIENT, "SPAN_KIND_CLIENT")
_FAILED = (2, "STATUS_CODE_ERROR")
_ROUTES = {"POST /v1/messages": messages_format.to_chat_request,
           "POST /v1/responses": responses_format.to_chat_request}  # fmt: skip
_NEEDLE = b'"' + sc.GEN_OPERATION.encode() + b'"'
#: a span's place: file index << 40 | line number << 16 | the span's index in its line
_LINE_SHIFT, _FILE_SHIFT = 16, 40
_DIGEST = 8  # bytes of one message's fingerprint


def normalise(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a chat-completions (or embeddings) body that decide its answer."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if value is None or key in IGNORED:
            continue
        if key == "max_completion_tokens":
            key = "max_tokens"
        elif key == "stop" and isinstance(value, str):
            value = [value]
        elif key == "n" and value == 1:
            continue
        elif key == "messages" and isinstance(value, list):
            value = [_message(m) for m in value]
        out[key] = value
    return out


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    return {k: v for k, v in message.items() if v is not None}


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def request_key(normalised: Mapping[str, Any]) -> bytes:
    """The index key of a normalised request: a digest of its canonical JSON."""
    return hashlib.blake2b(_canonical(normalised), digest_size=16).digest()


def message_prints(normalised: Mapping[str, Any]) -> bytes:
    """A short digest of each message, end to end: how far two conversations are the same."""
    messages = normalised.get("messages")
    if not isinstance(messages, list):
        return b""
    return b"".join(hashlib.blake2b(_canonical(m), digest_size=_DIGEST).digest() for m in messages)


@dataclass(frozen=True, slots=True)
class Recording:
    """One recorded answer. `answer` is the span's `output.value` as it was written; `form` which
    API's shape it has (a span of another route recorded that route's body); `ttft` the seconds
    from the call to its first chunk (to the whole answer when not streamed), `spacing` the seconds
    between chunks after it and `chunks` how many there were, for `pace = "recorded"`."""

    answer: str
    form: int
    stream: bool
    model: str
    prints: bytes
    where: int
    ttft: float | None = None
    spacing: float | None = None
    chunks: int | None = None

    def completion(self) -> dict[str, Any]:
        """The answer as a `chat.completion` (embeddings: the `list` as recorded)."""
        data: dict[str, Any] = orjson.loads(self.answer)
        if self.form == MESSAGE:
            return from_messages_response(data, self.model, created=0)
        if self.form == RESPONSE:  # served through `to_response`, which puts the "resp_" back
            completion = from_response(data)
            if isinstance(rid := completion.get("id"), str):
                completion["id"] = rid.removeprefix("resp_")
            return completion
        return data


@dataclass(slots=True)
class Recordings:
    """The index of every recording in `files`, and what could not be recorded."""

    files: list[str]
    by_key: dict[bytes, Recording | list[Recording]] = field(default_factory=dict)
    by_model: dict[str, list[Recording]] = field(default_factory=dict)
    #: the model each requested name was served by (the first recording's), for `--recorded`
    models: dict[str, str] = field(default_factory=dict)
    #: files whose LLM spans hold no request (written with `exclude_request_data`): their count
    excluded: dict[str, int] = field(default_factory=dict)
    #: embeddings spans without their vectors (tfgw records the inputs, not the vectors)
    no_vectors: int = 0
    spans: int = 0  # every span read
    _turns: dict[bytes, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_model.values())

    def find(self, normalised: Mapping[str, Any], stream: bool) -> Recording | None:
        """The recording of this request: the next of several, one of the same mode first."""
        key = request_key(normalised)
        found = self.by_key.get(key)
        if found is None or isinstance(found, Recording):
            return found
        same = [r for r in found if r.stream == stream] or found
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return same[turn % len(same)]

    def add(self, key: bytes, recording: Recording, provider_model: str | None) -> None:
        existing = self.by_key.get(key)
        if existing is None:
            self.by_key[key] = recording
        elif isinstance(existing, list):
            existing.append(recording)
        else:
            self.by_key[key] = [existing, recording]
        self.by_model.setdefault(recording.model, []).append(recording)
        if provider_model and recording.model not in self.models:
            self.models[recording.model] = provider_model

    def closest(self, normalised: Mapping[str, Any]) -> tuple[str, str] | None:
        """`(where, path)`: the recording closest to this request (`file:line`) and the first field
        where they differ, e.g. `messages[1].content`; None when nothing is recorded."""
        pool: Iterable[Recording] = self.by_model.get(str(normalised.get("model")), ())
        if not pool:
            pool = itertools.chain.from_iterable(self.by_model.values())
        prints = message_prints(normalised)
        best = max(pool, key=lambda r: _likeness(r.prints, prints), default=None)
        if best is None:
            return None
        file, line = self.files[best.where >> _FILE_SHIFT], (best.where >> _LINE_SHIFT) & 0xFFFFFF
        recorded = self._request_at(best.where)
        path = first_difference(recorded, normalised) if recorded is not None else None
        return f"{file}:{line}", path or "(an ignored field)"

    def _request_at(self, where: int) -> dict[str, Any] | None:
        """The normalised request of the recording at `where`, read again from its file."""
        name = self.files[where >> _FILE_SHIFT]
        number, ordinal = (where >> _LINE_SHIFT) & 0xFFFFFF, where & 0xFFFF
        with open_trace_file(name) as lines:
            raw = next(itertools.islice(lines, number - 1, None), None)
        if raw is None:
            return None
        spans = [span for _, span in spans_of(orjson.loads(raw))]
        attrs = _attributes(spans[ordinal])
        view = _view(orjson.loads(_string(attrs.get(sc.INPUT_VALUE)) or "{}"), spans[ordinal], spans)
        return normalise(view) if view is not None else None


def _likeness(recorded: bytes, asked: bytes) -> tuple[int, bool]:
    """How many messages from the start are the same, then whether there are as many."""
    same = 0
    for i in range(0, min(len(recorded), len(asked)), _DIGEST):
        if recorded[i : i + _DIGEST] != asked[i : i + _DIGEST]:
            break
        same += 1
    return same, len(recorded) == len(asked)


def first_difference(recorded: Any, asked: Any, path: str = "") -> str | None:
    """The path of the first place where two JSON values differ (`model` and `messages` first,
    then the other keys by name), or None when they are equal."""
    if isinstance(recorded, dict) and isinstance(asked, dict):
        keys = sorted(recorded.keys() | asked.keys())
        if not path:
            keys = [k for k in FIRST_FIELDS if k in keys] + [k for k in keys if k not in FIRST_FIELDS]
        for key in keys:
            where = f"{path}.{key}" if path else key
            if key not in recorded or key not in asked:
                return where
            if (found := first_difference(recorded[key], asked[key], where)) is not None:
                return found
        return None
    if isinstance(recorded, list) and isinstance(asked, list):
        for i, (a, b) in enumerate(zip(recorded, asked, strict=False)):
            if (found := first_difference(a, b, f"{path}[{i}]")) is not None:
                return found
        return None if len(recorded) == len(asked) else f"{path}[{min(len(recorded), len(asked))}]"
    same = type(recorded) is type(asked) and recorded == asked
    return None if same else path or "(the body)"


# --------------------------------------------------------------------------------------------------
# Loading


def load(paths: Sequence[str | Path]) -> Recordings:
    """The recordings of the trace files `paths` name (files, directories, `.gz`); a file that
    cannot be read is a `TraceFileError` naming it."""
    files = trace_files(paths)
    recordings = Recordings(files)
    for index, name in enumerate(files):
        with open_trace_file(name) as lines:
            _read(recordings, index, name, lines)
    return recordings


def _read(recordings: Recordings, index: int, name: str, lines: Iterator[bytes]) -> None:
    loads = orjson.loads
    for number, raw in enumerate(lines, 1):
        if _NEEDLE not in raw:  # no LLM span on this line: not worth parsing
            recordings.spans += raw.count(b'"spanId"')
            continue
        try:
            line = loads(raw)
        except orjson.JSONDecodeError:
            what = "a torn last line (a writer that crashed mid-write)" if is_torn(raw) else "not JSON"
            log.warning("%s:%d: skipped: %s", name, number, what)
            continue
        if not isinstance(line, dict):
            continue
        spans = [span for _, span in spans_of(line)]
        recordings.spans += len(spans)
        for ordinal, span in enumerate(spans):
            if span.get("kind") in _CLIENT_KINDS and ordinal <= 0xFFFF:
                where = index << _FILE_SHIFT | min(number, 0xFFFFFF) << _LINE_SHIFT | ordinal
                _span(recordings, name, where, span, spans)


def _attributes(span: Mapping[str, Any]) -> dict[str, Any]:
    """A span's attributes by key, their `AnyValue`s as they are (decoded only when read)."""
    return {kv.get("key"): kv.get("value") for kv in span.get("attributes") or ()}


def _string(value: Any) -> str | None:
    return value.get("stringValue") if isinstance(value, dict) else None


def _span(recordings: Recordings, name: str, where: int, span: Mapping[str, Any], spans: list[Any]) -> None:
    attrs = _attributes(span)
    operation = _string(attrs.get(sc.GEN_OPERATION))
    if operation not in ("chat", "embeddings") or (span.get("status") or {}).get("code") in _FAILED:
        return
    request = _string(attrs.get(sc.INPUT_VALUE))
    if request is None:
        recordings.excluded[name] = recordings.excluded.get(name, 0) + 1
        return
    answer = _string(attrs.get(sc.OUTPUT_VALUE))
    if answer is None:
        recordings.no_vectors += operation == "embeddings"
        return
    try:
        body, data = orjson.loads(request), orjson.loads(answer)
    except orjson.JSONDecodeError:
        return
    form = _form(data, operation)
    view = _view(body, span, spans) if isinstance(body, dict) else None
    if form is None or view is None:
        return
    normalised = normalise(view)
    model = normalised.get("model")
    stream = operation == "chat" and (attrs.get(sc.GEN_STREAM) or {}).get("boolValue") is True
    ttft, spacing, chunks = _timing(span, spans, stream)
    recording = Recording(answer, form, stream, str(model), message_prints(normalised), where,
                          ttft, spacing, chunks)  # fmt: skip
    recordings.add(request_key(normalised), recording, _string(attrs.get(sc.GEN_REQUEST_MODEL)))


def _view(body: dict[str, Any], span: Mapping[str, Any], spans: list[Any]) -> dict[str, Any] | None:
    """The chat-completions form of a recorded request: a body of `/v1/messages` or
    `/v1/responses` (the route is the root span's name) translated as the gateway translates it."""
    parent = span.get("parentSpanId")
    route = next((s.get("name") for s in spans if parent and s.get("spanId") == parent), None)
    translate = _ROUTES.get(route or "")
    if translate is None:
        return body
    try:
        return translate(body, strict=False)
    except BadRequestError:
        return None


def _form(data: Any, operation: str) -> int | None:
    """Which API's shape a recorded answer has, if it is a whole answer."""
    if not isinstance(data, dict):
        return None
    if operation == "embeddings":
        return EMBEDDINGS if data.get("object") == "list" and data.get("data") else None
    if data.get("object") == "chat.completion":
        choices = data.get("choices")
        ended = isinstance(choices, list) and choices and all(c.get("finish_reason") for c in choices)
        return CHAT if ended else None
    if data.get("type") == "message":
        return MESSAGE
    if data.get("object") == "response" and data.get("status") in ("completed", "incomplete"):
        return RESPONSE
    return None


def _timing(
    span: Mapping[str, Any], spans: list[Any], stream: bool
) -> tuple[float | None, float | None, int | None]:
    """`(ttft, spacing, chunks)` of a recorded call, in seconds."""
    try:
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    except (KeyError, TypeError, ValueError):
        return None, None, None
    if not stream:
        return max(0.0, (end - start) / 1e9), None, None
    first = next((e for e in span.get("events") or () if e.get("name") == sc.FIRST_TOKEN_EVENT), None)
    if first is None:
        return None, None, None
    at = int(first.get("timeUnixNano") or start)
    own = span.get("spanId")
    chunks = None
    for child in spans:
        if child.get("parentSpanId") == own and child.get("name") == "stream":
            value = _attributes(child).get(sc.STREAM_CHUNKS) or {}
            chunks = int(value["intValue"]) if "intValue" in value else None
    spacing = (end - at) / 1e9 / (chunks - 1) if chunks and chunks > 1 else None
    return max(0.0, (at - start) / 1e9), spacing, chunks


# --------------------------------------------------------------------------------------------------
# The process's loaded indexes


class Loaded:
    """Indexes already loaded by this process, by their files' names, sizes and modification times:
    `tfgw serve` loads them before forking its workers, which find them here instead of reading
    the files again, and a config reload that names the same unchanged files reuses them."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._indexes: dict[tuple[tuple[str, int, int], ...], Recordings] = {}

    def get(self, paths: Sequence[str | Path]) -> Recordings:
        files = trace_files(paths)
        signature = tuple(_signature(f) for f in files)
        found = self._indexes.get(signature)
        if found is None:
            found = self._indexes[signature] = load(paths)
            while len(self._indexes) > self.keep:
                del self._indexes[next(iter(self._indexes))]
        return found


def _signature(name: str) -> tuple[str, int, int]:
    try:
        st = Path(name).stat()
    except OSError:
        return name, -1, -1
    return name, st.st_size, st.st_mtime_ns


LOADED = Loaded()
