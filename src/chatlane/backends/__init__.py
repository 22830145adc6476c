"""Backends: chat endpoints, completion endpoints, the embedded engine and the scripted fake."""
