"""Translations between the wire formats clients speak and the one providers take (chat completions),
one module per pair."""
