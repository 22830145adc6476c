"""chatlane's pytest plugin (loaded automatically where chatlane is installed).

The ``chatlane_cassette`` fixture gives each test its own `Cassette`, kept at
``cassettes/<test module>/<test name>.json`` beside the test file:

    def test_weather(chatlane_cassette):
        llm = OpenAIChat(URL, api_key=KEY, http_client=chatlane_cassette.client())
        assert "Oslo" in llm.chat("Weather in Oslo?").text

``--chatlane-record=auto`` (the default) replays a cassette that exists and records one that
does not; ``record`` records every cassette anew; ``replay`` never touches the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chatlane.testing._cassette import Cassette


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chatlane")
    group.addoption(
        "--chatlane-record",
        choices=("auto", "record", "replay"),
        default="auto",
        help="chatlane cassettes: replay existing ones and record missing ones (auto), "
        "record all anew (record), or replay only (replay)",
    )


@pytest.fixture
def chatlane_cassette(request: pytest.FixtureRequest) -> Iterator[Cassette]:
    """A cassette of this test's HTTP exchanges (see the module docstring)."""
    from chatlane.testing._cassette import Cassette

    mode: Any = request.config.getoption("--chatlane-record")
    test_file = Path(str(request.node.fspath))
    name = re.sub(r"[^\w.-]+", "_", request.node.name)
    path = test_file.parent / "cassettes" / test_file.stem / f"{name}.json"
    with Cassette(path, mode=mode) as cassette:
        yield cassette
