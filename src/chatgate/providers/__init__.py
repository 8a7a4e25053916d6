"""Pure translators between the OpenAI chat shape and each upstream protocol (no I/O)."""
