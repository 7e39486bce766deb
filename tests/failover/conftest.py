"""Shared by the failover checks: their measured figures are printed past pytest's capture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from failover import reporting


@pytest.fixture(autouse=True)
def _print_through(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    reporting.CAPTURE[:] = [capsys]
    yield
    reporting.CAPTURE.clear()
