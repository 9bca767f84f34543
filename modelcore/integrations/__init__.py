"""Integrations with outside tools; each imports its tool lazily, so modelcore works without it."""
