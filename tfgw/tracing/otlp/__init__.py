"""The trace-file format, owned here and nowhere else: OTLP/JSON lines.

- `codec`: Python values and span records as OTLP/JSON dicts, and back (`tfgw.tracing.otlp.any_value`,
  `attributes`, `decode_value`, ... are re-exported here, so `otlp.any_value` reads as it did).
- `files`: finding and opening trace files (files, directories, `.gz`, standard input) and the
  torn-last-line rule.
- `validate`: the one structural validator, with an explicit strictness (`STRICT` for
  `tfgw traces check`, `LENIENT` for `tfgw replay`).

The format itself is written down in docs/trace-files.md.
"""

from tfgw.tracing.otlp.codec import *  # noqa: F403  (the codec's names, as `otlp.any_value` etc.)
from tfgw.tracing.otlp.codec import __all__ as __all__
