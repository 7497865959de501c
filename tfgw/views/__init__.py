"""Rich renderings of the trace log for the terminal: request rows, span trees, stats tables.

Views take plain data (rows, `tfgw.tracing.reader.Trace`, stats dicts) and return rich
renderables or `Text`; printing is the CLI's job. Plain text when not on a terminal, no colour
with `NO_COLOR` (rich's `Console` does both).
"""
