"""The trace-file format, owned here and nowhere else: OTLP/JSON lines.

- `codec`: Python values and span records as OTLP/JSON dicts, and back (`tfgw.tracing.otlp.any_value`,
  `attributes`, `decode_value`, ... are re-exported here, so `otlp.any_value` reads as it did).
- `files`: finding and opening trace files (files, directories, `.gz`, standard input) and the
  torn-last-line rule.
- `validate`: the one structural validator, with an explicit strictness (`STRICT` for
  `tfgw traces check`, `LENIENT` for `tfgw replay`).

The format itself is written down in docs/trace-files.md.
"""

from tfgw.tracing.otlp.codec import (
    INT64_MAX,
    INT64_MIN,
    KIND_BY_NAME,
    KIND_CLIENT,
    KIND_INTERNAL,
    KIND_NAMES,
    KIND_PREFIX,
    KIND_SERVER,
    SCOPE,
    STATUS_BY_NAME,
    STATUS_ERROR,
    STATUS_NAMES,
    STATUS_OK,
    STATUS_PREFIX,
    STATUS_UNSET,
    any_value,
    attributes,
    decode_attributes,
    decode_value,
    export_request,
    resource,
    spans_of,
)

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KIND_BY_NAME",
    "KIND_CLIENT",
    "KIND_INTERNAL",
    "KIND_NAMES",
    "KIND_PREFIX",
    "KIND_SERVER",
    "SCOPE",
    "STATUS_BY_NAME",
    "STATUS_ERROR",
    "STATUS_NAMES",
    "STATUS_OK",
    "STATUS_PREFIX",
    "STATUS_UNSET",
    "any_value",
    "attributes",
    "decode_attributes",
    "decode_value",
    "export_request",
    "resource",
    "spans_of",
]
