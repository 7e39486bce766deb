"""JSON log lines carry the fields operators grep for, exactly once per record."""

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest

from agenda.common.logs import (
    bind_request_id,
    configure_logging,
    current_request_id,
    new_request_id,
    request_id_var,
    sanitize_request_id,
)

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def stream(restore_root: None) -> io.StringIO:
    buffer = io.StringIO()
    configure_logging("agenda-db", level="DEBUG", stream=buffer)
    return buffer


def lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_has_core_fields(stream: io.StringIO) -> None:
    logging.getLogger("agenda.db.raft").info("leader is %s", "db-2")
    (entry,) = lines(stream)
    assert entry["level"] == "INFO"
    assert entry["service"] == "agenda-db"
    assert entry["logger"] == "agenda.db.raft"
    assert entry["msg"] == "leader is db-2"
    assert RFC3339_UTC.match(entry["ts"])
    assert "request_id" not in entry


def test_extra_fields_are_included_and_cannot_clobber_core(stream: io.StringIO) -> None:
    logging.getLogger("t").warning("slow", extra={"elapsed_ms": 1234, "service": "evil", "obj": object()})
    (entry,) = lines(stream)
    assert entry["elapsed_ms"] == 1234
    assert entry["service"] == "agenda-db"
    assert entry["extra_service"] == "evil"
    assert entry["obj"].startswith("<object object")


def test_exception_text_is_included(stream: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("t").exception("failed")
    (entry,) = lines(stream)
    assert entry["level"] == "ERROR"
    assert "RuntimeError: boom" in entry["exc"]
    assert "Traceback" in entry["exc"]


def test_request_id_from_context(stream: io.StringIO) -> None:
    log = logging.getLogger("t")
    with bind_request_id("req-42"):
        log.info("inside")
        assert current_request_id() == "req-42"
    log.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "req-42"
    assert "request_id" not in outside
    assert request_id_var.get() is None


def test_request_id_is_per_thread(stream: io.StringIO) -> None:
    binding = bind_request_id("main-thread")
    try:
        worker = threading.Thread(target=lambda: logging.getLogger("t").info("from worker"))
        worker.start()
        worker.join()
    finally:
        binding.reset()
    (entry,) = lines(stream)
    assert "request_id" not in entry


def test_configure_twice_does_not_duplicate(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("svc", stream=first)
    configure_logging("svc", stream=second)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_level_filters(restore_root: None) -> None:
    buffer = io.StringIO()
    configure_logging("svc", level="warning", stream=buffer)
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").warning("shown")
    assert [entry["msg"] for entry in lines(buffer)] == ["shown"]


def test_unknown_level_is_rejected(restore_root: None) -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("svc", level="LOUD")


def test_plain_format(restore_root: None) -> None:
    buffer = io.StringIO()
    configure_logging("svc", json=False, stream=buffer)
    with bind_request_id("r1"):
        logging.getLogger("agenda.x").info("hello %d", 5, extra={"peer": "db-1"})
    text = buffer.getvalue().strip()
    assert re.match(r"^\S+Z INFO    svc agenda.x \[r1\] hello 5 peer='db-1'$", text)


def test_request_id_helpers() -> None:
    minted = new_request_id()
    assert sanitize_request_id(minted) == minted
    assert sanitize_request_id("abc\nFAKE LOG LINE") is None
    assert sanitize_request_id("x" * 129) is None
    assert sanitize_request_id(None) is None
