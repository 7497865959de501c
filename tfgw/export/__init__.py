"""What reads the trace log and sends it on: targets, OTLP encoding, senders and retry, the
exporter process and its cursors."""
