"""Retrieval metrics, each following a named reference implementation (see each module)."""
