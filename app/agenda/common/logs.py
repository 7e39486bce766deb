"""Structured logging shared by every service: one JSON object per line, request ids included.

Named `logs` (not `logging`) so that `from agenda.common import logs` never shadows the standard
library module at a call site. Services keep using `logging.getLogger(__name__)`; only the process
entry point calls `configure_logging`. One JSON object per line lets journald, `jq` and a log shipper
read every service the same way; the plain format is for a developer's terminal.

A request id bound with `bind_request_id` (the API gateway binds the X-Request-ID it received or
minted) is added to every record logged in that context, and `agenda.common.http` forwards it to the
next service, so one id follows a request across machines.
"""

from __future__ import annotations

import contextvars
import json as _json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any, Final

__all__ = [
    "JsonFormatter",
    "PlainFormatter",
    "bind_request_id",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_id_var",
    "sanitize_request_id",
]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("agenda_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_CORE_KEYS: Final = ("ts", "level", "service", "logger", "msg", "request_id", "exc", "stack")
_HANDLER_MARK: Final = "_agenda_logs_handler"
_REQUEST_ID_RE: Final = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class _RequestIdBinding:
    """Returned by `bind_request_id`: the id is bound at once; `with` (or `reset()`) restores the old one."""

    def __init__(self, token: contextvars.Token[str | None]) -> None:
        self._token = token

    def reset(self) -> None:
        request_id_var.reset(self._token)

    def __enter__(self) -> _RequestIdBinding:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()


def bind_request_id(value: str | None) -> _RequestIdBinding:
    """Bind the request id for the current context (thread / task); usable as a context manager."""
    return _RequestIdBinding(request_id_var.set(value))


def current_request_id() -> str | None:
    return request_id_var.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def sanitize_request_id(value: str | None) -> str | None:
    """Return `value` if it is a safe request id, else None (caller then mints a new one).

    Request ids arrive in client headers; refusing anything but a short token keeps clients from
    injecting newlines or megabytes into every log line and into headers sent to other services.
    """
    if value is not None and _REQUEST_ID_RE.match(value):
        return value
    return None


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_") and key != "request_id"
    }


def _record_request_id(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "request_id", None)
    return explicit if explicit is not None else request_id_var.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, service, logger, msg, request_id, extras, exc."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = _record_request_id(record)
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in _extras(record).items():
            # An extra may not overwrite a core field; keep it under a distinct name instead of losing it.
            entry[f"extra_{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: a non-serialisable extra must degrade to its str(), never drop the log line.
        return _json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """Human format: `ts LEVEL service logger [request_id] msg key=value ...` then any traceback."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        parts = [_rfc3339(record.created), f"{record.levelname:<7}", self.service, record.name]
        request_id = _record_request_id(record)
        if request_id is not None:
            parts.append(f"[{request_id}]")
        parts.append(record.getMessage())
        parts.extend(f"{key}={value!r}" for key, value in _extras(record).items())
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelNamesMapping().get(level.upper())
    if value is None:
        allowed = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ValueError(f"unknown log level {level!r}; expected one of {allowed}")
    return value


def configure_logging(
    service: str,
    level: str | int = "INFO",
    json: bool = True,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Route the root logger to `stream` (default stderr) in JSON or plain format; return the handler.

    Idempotent: a second call replaces the handler installed by the first instead of adding another,
    so records are never duplicated; handlers installed by others (pytest's capture) are left alone.
    """
    numeric_level = _parse_level(level)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(service) if json else PlainFormatter(service))
    root.addHandler(handler)
    root.setLevel(numeric_level)
    return handler
