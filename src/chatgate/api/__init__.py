"""HTTP handlers: raw ASGI callables, no framework on the hot path."""
