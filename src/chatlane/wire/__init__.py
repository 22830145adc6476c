"""Codecs for the OpenAI-compatible wire format and Server-Sent Events."""
