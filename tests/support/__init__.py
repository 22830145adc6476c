"""Test support shared by the test suites: the scripted HTTP server (see `server`)."""

from support.server import (
    CLOSE,
    RESET,
    Pause,
    Recorded,
    Reply,
    ScriptedServer,
    free_port,
)

__all__ = ["CLOSE", "RESET", "Pause", "Recorded", "Reply", "ScriptedServer", "free_port"]
