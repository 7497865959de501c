"""What the gateway writes: span records built as plain data, their attribute keys, and the trace log."""
