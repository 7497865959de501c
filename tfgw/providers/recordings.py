"""The index of recorded calls: the LLM spans of trace files, by the request they answered.

A `[providers.NAME] kind = "recorded"` provider answers from this index (`tfgw.providers.recorded`).
It is built once, at start, from the files and directories given (read by `tfgw.tracing.otlp`, the
one reader of trace files: `.gz`, directories, the torn-last-line rule):

- each LLM span (CLIENT, named `chat {model}` or `embeddings {model}` as tfgw names it, else with
  `gen_ai.operation.name` `chat` or `embeddings`) that did not fail, with its request (`input.value`)
  and its answer (`output.value`, which must have ended: a stream the client left is no answer) is
  one `Recording`; a line without an LLM span is not parsed at all;
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

import gc
import hashlib
import itertools
import logging
from array import array
from collections.abc import Iterator, Mapping, Sequence
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
from tfgw.tracing.otlp.files import TraceFileError, is_torn, open_trace_file, trace_files

__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "IGNORED",
    "LOADED",
    "MESSAGE",
    "RESPONSE",
    "Loaded",
    "Recording",
    "Recordings",
    "first_difference",
    "load",
    "message_prints",
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
_OPERATIONS = ("chat", "embeddings")
_FORMS = {"POST /v1/messages": MESSAGE, "POST /v1/responses": RESPONSE}
_NEEDLE = b'"' + sc.GEN_OPERATION.encode() + b'"'
#: a span's place: file index << 40 | line number << 16 | the span's index in its line
_LINE_SHIFT, _FILE_SHIFT = 16, 40
_DIGEST = 8  # bytes of one message's fingerprint
FIRST_TOKEN: Final = sc.FIRST_TOKEN_EVENT
_CHUNKS: Final = frozenset((sc.STREAM_CHUNKS,))


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
    """A short digest of each message, end to end: how far two conversations are the same. The
    digests are this process's `hash()`es (salted per process): they are never stored."""
    messages = normalised.get("messages")
    if not isinstance(messages, list):
        return b""
    return array("q", [hash(_canonical(m)) for m in messages]).tobytes()


@dataclass(slots=True)
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
    #: the model each requested name was served by (the first recording's), for `--recorded`
    models: dict[str, str] = field(default_factory=dict)
    #: files whose LLM spans hold no request (written with `exclude_request_data`): their count
    excluded: dict[str, int] = field(default_factory=dict)
    #: embeddings spans without their vectors (tfgw records the inputs, not the vectors)
    no_vectors: int = 0
    spans: int = 0  # every span read
    count: int = 0  # recordings
    _turns: dict[bytes, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Recording]:
        for found in self.by_key.values():
            if isinstance(found, list):
                yield from found
            else:
                yield found

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
        self.count += 1
        if provider_model and recording.model not in self.models:
            self.models[recording.model] = provider_model

    def closest(self, normalised: Mapping[str, Any]) -> tuple[str, str | None] | None:
        """`(where, path)`: the recording closest to this request (`file:line`) and the first field
        where they differ, e.g. `messages[1].content` (None when its file cannot be read again);
        None when nothing is recorded."""
        model, prints = str(normalised.get("model")), message_prints(normalised)
        best = max(self, key=lambda r: (r.model == model, *_likeness(r.prints, prints)), default=None)
        if best is None:
            return None
        file, line = self.files[best.where >> _FILE_SHIFT], (best.where >> _LINE_SHIFT) & 0xFFFFFF
        try:
            recorded = self._request_at(best.where)
        except (TraceFileError, orjson.JSONDecodeError, IndexError, KeyError, TypeError):
            return f"{file}:{line}", None  # changed or gone since it was loaded
        path = first_difference(recorded, normalised) if recorded is not None else None
        return f"{file}:{line}", path or "(a field that is not compared)"

    def _request_at(self, where: int) -> dict[str, Any] | None:
        """The normalised request of the recording at `where`, read again from its file."""
        name = self.files[where >> _FILE_SHIFT]
        number, ordinal = (where >> _LINE_SHIFT) & 0xFFFFFF, where & 0xFFFF
        with open_trace_file(name) as lines:
            raw = next(itertools.islice(lines, number - 1, None), None)
        if raw is None:
            return None
        spans = [span for _, span in spans_of(orjson.loads(raw))]
        span = spans[ordinal]
        body = orjson.loads(_string(_attributes(span).get(sc.INPUT_VALUE)) or "{}")
        view = _view(body, _route(span, spans))
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
    # a million parsed spans make no reference cycles: collecting them all the while only costs
    collecting = gc.isenabled()
    gc.disable()
    try:
        for index, name in enumerate(files):
            with open_trace_file(name) as lines:
                _read(recordings, index, name, lines)
    finally:
        if collecting:
            gc.enable()
    return recordings


def _read(recordings: Recordings, index: int, name: str, lines: Iterator[bytes]) -> None:
    loads = orjson.loads
    for number, raw in enumerate(lines, 1):
        if raw.find(_NEEDLE) < 0 and raw.endswith(b"\n"):  # no LLM span here: not worth parsing
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
        try:
            spans = [span for _, span in spans_of(line)]
            recordings.spans += len(spans)
            for ordinal, span in enumerate(spans):
                if span.get("kind") in _CLIENT_KINDS and ordinal <= 0xFFFF:
                    where = index << _FILE_SHIFT | min(number, 0xFFFFFF) << _LINE_SHIFT | ordinal
                    _span(recordings, name, where, span, spans)
        except (AttributeError, KeyError, TypeError, ValueError):
            log.warning("%s:%d: skipped: not an OTLP/JSON line tfgw can read", name, number)


#: the attributes of an LLM span the index reads (of a span not named as tfgw names them)
_READ: Final = frozenset((sc.GEN_OPERATION, sc.INPUT_VALUE, sc.OUTPUT_VALUE))


def _attributes(span: Mapping[str, Any], keys: frozenset[str] = _READ) -> dict[str, Any]:
    """Those of a span's attributes the index reads, their `AnyValue`s as they are."""
    found = {}
    for kv in span.get("attributes") or ():
        if (key := kv["key"]) in keys:
            found[key] = kv["value"]
    return found


def _string(value: Any) -> str | None:
    return value.get("stringValue") if isinstance(value, dict) else None


def _span(recordings: Recordings, name: str, where: int, span: Mapping[str, Any], spans: list[Any]) -> None:
    if (span.get("status") or {}).get("code") in _FAILED:
        return
    # tfgw names an LLM span `{operation} {model}`: read so, only two attributes need finding
    operation, _, provider_model = (span.get("name") or "").partition(" ")
    if operation in _OPERATIONS:
        request, answer = _texts(span["attributes"])
    else:
        attrs = _attributes(span)
        operation, provider_model = _string(attrs.get(sc.GEN_OPERATION)) or "", ""
        request, answer = _string(attrs.get(sc.INPUT_VALUE)), _string(attrs.get(sc.OUTPUT_VALUE))
        if operation not in _OPERATIONS:
            return
    if request is None:
        recordings.excluded[name] = recordings.excluded.get(name, 0) + 1
        return
    if answer is None:
        recordings.no_vectors += operation == "embeddings"
        return
    try:
        body = orjson.loads(request)
    except orjson.JSONDecodeError:
        return
    route = _route(span, spans)
    first = _first_token(span) if operation == "chat" else None
    form = _form(answer, operation, route, first is not None)
    view = _view(body, route) if isinstance(body, dict) else None
    if form is None or view is None:
        return
    normalised = normalise(view)
    ttft, spacing, chunks = _timing(span, spans, first)
    recording = Recording(answer, form, first is not None, str(normalised.get("model")),
                          message_prints(normalised), where, ttft, spacing, chunks)  # fmt: skip
    recordings.add(request_key(normalised), recording, provider_model)


def _texts(attributes: list[Any]) -> tuple[str | None, str | None]:
    """`input.value` and `output.value`, looked for from the end, where tfgw writes them."""
    request = answer = None
    for kv in reversed(attributes):
        key = kv["key"]
        if key == sc.INPUT_VALUE:
            request = _string(kv["value"])
            if answer is not None:
                break
        elif key == sc.OUTPUT_VALUE:
            answer = _string(kv["value"])
            if request is not None:
                break
    return request, answer


def _route(span: Mapping[str, Any], spans: list[Any]) -> str:
    """The name of the span's parent (the root span: its route), when it is on the same line."""
    parent = span.get("parentSpanId")
    if parent:
        for other in spans:
            if other.get("spanId") == parent:
                return str(other.get("name") or "")
    return ""


def _first_token(span: Mapping[str, Any]) -> int | None:
    """When a streamed call's first chunk came (Unix ns); None for a call that did not stream."""
    for event in span.get("events") or ():
        if event.get("name") == FIRST_TOKEN:
            return int(event.get("timeUnixNano") or 0) or None
    return None


def _view(body: dict[str, Any], route: str) -> dict[str, Any] | None:
    """The chat-completions form of a recorded request: a body of `/v1/messages` or
    `/v1/responses` translated as the gateway translates it for a chat-completions provider."""
    translate = _ROUTES.get(route)
    if translate is None:
        return body
    try:
        return translate(body, strict=False)
    except BadRequestError:
        return None


def _form(answer: str, operation: str, route: str, stream: bool) -> int | None:
    """Which API's shape a recorded answer has, or None when it is no whole answer. Read from
    where it was recorded, not parsed (it is, when served): a stream's answer is the folded
    `chat.completion` (tfgw's own JSON), with a null finish reason, or no choices, when the client
    left before the end; a whole answer is in its route's shape."""
    if operation == "embeddings":
        return EMBEDDINGS
    if stream:
        return None if '"finish_reason":null' in answer or '"choices":[]' in answer else CHAT
    return _FORMS.get(route, CHAT)


def _timing(
    span: Mapping[str, Any], spans: list[Any], first: int | None
) -> tuple[float | None, float | None, int | None]:
    """`(ttft, spacing, chunks)` of a recorded call (`first`: its first chunk), in seconds."""
    try:
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    except (KeyError, TypeError, ValueError):
        return None, None, None
    if first is None:
        return max(0.0, (end - start) / 1e9), None, None
    own, chunks = span.get("spanId"), None
    for child in spans:
        if child.get("name") == "stream" and child.get("parentSpanId") == own:
            value = _attributes(child, _CHUNKS).get(sc.STREAM_CHUNKS) or {}
            chunks = int(value["intValue"]) if "intValue" in value else None
    # the time from the first chunk to the end of the stream, shared by the chunks after the first
    # and the stream's end (`[DONE]`, an event of its own to a provider that paces its events)
    spacing = (end - first) / 1e9 / chunks if chunks and chunks > 1 else None
    return max(0.0, (first - start) / 1e9), spacing, chunks


# --------------------------------------------------------------------------------------------------
# The process's loaded indexes


class Loaded:
    """Indexes already loaded by this process, by the paths they were loaded from, each kept with
    its files' names, sizes and modification times: `tfgw serve` loads them before forking its
    workers, which find them here instead of reading the files again, and a config reload that
    names the same unchanged files reuses them. Only the latest index of the same paths is kept,
    and `keep` paths at most."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._indexes: dict[tuple[str, ...], tuple[tuple[tuple[str, int, int], ...], Recordings]] = {}

    def get(self, paths: Sequence[str | Path]) -> Recordings:
        named = tuple(str(p) for p in paths)
        signature = tuple(_signature(f) for f in trace_files(paths))
        found = self._indexes.pop(named, None)
        index = found[1] if found is not None and found[0] == signature else load(paths)
        self._indexes[named] = signature, index  # the newest last
        while len(self._indexes) > self.keep:
            del self._indexes[next(iter(self._indexes))]
        return index


def _signature(name: str) -> tuple[str, int, int]:
    try:
        st = Path(name).stat()
    except OSError:
        return name, -1, -1
    return name, st.st_size, st.st_mtime_ns


LOADED = Loaded()
