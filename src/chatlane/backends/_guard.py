"""The switch that forbids real model requests, for tests (as pydantic-ai's
``ALLOW_MODEL_REQUESTS``): `chatlane.testing.allow_requests(False)` or the environment
variable ``CHATLANE_ALLOW_REQUESTS=0``.

It covers every connection chatlane opens itself: the transport's own HTTP clients, and a
cassette that would record. A client handed in by the caller (a replaying cassette, an httpx
mock transport) is the caller's and is not stopped.
"""

from __future__ import annotations

import os

from chatlane.errors import ChatlaneError

__all__ = ["RequestsForbidden", "check", "set_allowed"]


class RequestsForbidden(ChatlaneError):
    """A real request was about to be sent while requests are forbidden."""


_allowed: bool | None = None


def set_allowed(allowed: bool | None) -> None:
    """Allow or forbid real requests; None goes back to the environment's choice."""
    global _allowed
    _allowed = allowed


def allowed() -> bool:
    if _allowed is not None:
        return _allowed
    return os.environ.get("CHATLANE_ALLOW_REQUESTS", "1").strip().lower() not in (
        "0",
        "false",
        "no",
        "off",
    )


def check(url: str) -> None:
    """Raise `RequestsForbidden` naming ``url`` when real requests are forbidden."""
    if not allowed():
        raise RequestsForbidden(
            f"a real request to {url} was about to be sent, but requests are forbidden "
            "(chatlane.testing.allow_requests(False) or CHATLANE_ALLOW_REQUESTS=0); "
            "use a cassette or a Fake backend"
        )
