"""Fixtures shared by the dev stack's unit tests."""

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def listening() -> Iterator[int]:
    """A port on 127.0.0.1 that something is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
