"""Fixtures of the real-server tests; see ``llamafix``."""

from llamafix import llama_server

__all__ = ["llama_server"]
