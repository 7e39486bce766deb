"""The fast paths: a plainly well-formed ``PUT /v1/kv/<key>``, ``POST /v1/txn`` or range read
``GET /v1/kv`` on the leader (and, on the event-loop server, ``GET /v1/kv/<key>``), answered without
Flask.

They are the hot paths of every service (a calendar change is one txn, an agenda one range read).
Flask's per-request machinery (request context, routing, hooks) costs more than the rest of such a
request on the leader, so they are answered directly with the same bytes and headers as the view;
anything else is Flask's. Two front ends share the checks and the answers: :func:`fast_put_middleware`
(a WSGI wrapper; a thread waits for each proposal or read barrier) and :class:`LoopFastPath` (on
:class:`~agenda.common.loopserver.LoopWSGIServer`, what agenda-db serves with: no thread waits).
"""

from __future__ import annotations

import collections
import io
import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

import flask
from werkzeug.test import EnvironBuilder

from agenda.common.httpserver import response_bytes
from agenda.common.jsonbody import JSONBodyError, loads
from agenda.common.logs import bind_request_id, sanitize_request_id
from agenda.common.loopserver import Request
from agenda.db.api.context import (
    EMPTY,
    MAX_BODY_BYTES,
    NODE_HEADER,
    REVISION_HEADER,
    DBContext,
    new_request_id,
)
from agenda.db.api.kv import key_not_found
from agenda.db.api.problems import problem_for_result
from agenda.db.commands import validate_key
from agenda.db.errors import OutcomeUnknown, StateMachineError
from agenda.db.records import Record
from agenda.db.txn import put_command, txn_command

__all__ = ["PUT_RULE", "RANGE_RULE", "TXN_RULE", "LoopFastPath", "fast_put_middleware"]

_KV_PREFIX: Final = "/v1/kv/"
RANGE_RULE: Final = "/v1/kv"
_RANGE_ARGS: Final = frozenset({"consistency", "prefix", "start", "limit"})
PUT_RULE: Final = "/v1/kv/<key:key>"
TXN_RULE: Final = "/v1/txn"
_PUT_FIELDS: Final = frozenset({"value", "lease", "prev_revision"})
_TXN_FIELDS: Final = frozenset({"compare", "success", "failure"})
# The query strings of a single-key read the loop answers, and the consistency each asks for.
_KEY_READ_QUERIES: Final = {
    "": "linearizable",
    "consistency=linearizable": "linearizable",
    "consistency=stale": "stale",
}


_NOT_ASCII_JSON: Final = re.compile("[\x7f-\U0010ffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}"


def ascii_json(text: str) -> str:
    """Canonical JSON text (``ensure_ascii=False``) as ``json.dumps`` writes it with ``ensure_ascii=True``:
    the same text but DEL and every non-ASCII character escaped as ``\\uXXXX`` (a surrogate pair
    beyond the BMP), lowercase hex. Both forms escape quotes, backslashes and control characters alike.
    """
    return _NOT_ASCII_JSON.sub(_escape, text)


def page_text(records: Sequence[tuple[str, Record]], revision: int, more: bool) -> str:
    """What jsonify writes for the range view's ``{"items", "revision", "more"}`` (``Record.as_kv`` for
    each item), without decoding the stored values only to encode them again: a stored value is
    canonical JSON (compact, keys sorted), which is exactly what decoding it and encoding it again,
    key order kept, produces, but for ``ensure_ascii`` (see :func:`ascii_json`)."""
    items = ",".join(item_text(key, record) for key, record in records)
    return f'{{"items":[{items}],"revision":{revision},"more":{"true" if more else "false"}}}'


def item_text(key: str, record: Record) -> str:
    """What jsonify writes for ``record.as_kv(key)`` (see :func:`page_text`)."""
    return (
        f'{{"key":{json.dumps(key)},"value":{ascii_json(record.value_json)},'
        f'"create_revision":{record.create_revision},"mod_revision":{record.mod_revision},'
        f'"version":{record.version},"lease":{record.lease}}}'
    )


def range_args(query: str) -> tuple[str, str | None, int | None, str] | None:
    """``prefix, start, limit, consistency`` of a range read's query string as the view reads them, or
    None for anything unusual (a repeated or unknown argument, redirect, a bad value): the view's."""
    if not query.isascii():
        return None
    # Parsed as Flask parses request.args.
    pairs = parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
    args = dict(pairs)
    if len(args) != len(pairs) or not _RANGE_ARGS.issuperset(args):
        return None
    consistency = args.get("consistency", "linearizable")
    limit_text = args.get("limit")
    if consistency not in ("linearizable", "stale") or (
        limit_text is not None
        and not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 19)
    ):
        return None
    prefix = args.get("prefix", "")
    start = args.get("start")
    limit = None if limit_text is None else int(limit_text)
    try:
        EMPTY.range(prefix, start, limit)  # the view's validation of the arguments
    except StateMachineError:
        return None
    return prefix, start, limit, consistency


def put_body_command(key: str, raw: bytes) -> dict[str, Any] | None:
    """The command of ``PUT /v1/kv/<key>`` with body ``raw`` when the view would certainly propose it
    (a JSON object with exactly the view's fields and types, accepted by ``put_command``), else None."""
    try:  # the services' one strict parser: a 200 KB `[[[[...` is a JSONBodyError, not a 500
        body = loads(raw)
    except JSONBodyError:
        return None
    if type(body) is not dict or "value" not in body or not _PUT_FIELDS.issuperset(body):
        return None
    lease = body.get("lease", 0)
    prev_revision = body.get("prev_revision")
    if type(lease) is not int or not (prev_revision is None or type(prev_revision) is int):
        return None
    try:
        return put_command(key, body["value"], lease=lease, prev_revision=prev_revision)
    except StateMachineError:
        return None


def txn_body_command(raw: bytes) -> dict[str, Any] | None:
    """The command of ``POST /v1/txn`` with body ``raw`` when the view would certainly propose it (its
    ``json_body`` types, accepted by ``txn_command``), else None."""
    try:
        body = loads(raw)
    except JSONBodyError:
        return None
    if (
        type(body) is not dict
        or not _TXN_FIELDS.issuperset(body)
        or any(type(branch) is not list for branch in body.values())
    ):
        return None
    try:
        return txn_command(body.get("compare", []), body.get("success", []), body.get("failure", []))
    except Exception:  # not only StateMachineError: whatever the view answers, Flask answers it
        return None


def put_text(result: dict[str, Any]) -> str:
    """The body the PUT view answers for a committed ``result`` (raises the problem of a refused one)."""
    problem = problem_for_result(result)
    if problem is not None:
        raise problem
    revision, create_revision, version = result["revision"], result["create_revision"], result["version"]
    if type(revision) is int and type(create_revision) is int and type(version) is int:
        # exactly what jsonify produces for these three integers (compact separators, newline)
        return f'{{"revision":{revision},"create_revision":{create_revision},"version":{version}}}\n'
    payload = {
        "revision": revision,
        "create_revision": create_revision,
        "version": version,
    }  # pragma: no cover
    return json.dumps(payload, separators=(",", ":")) + "\n"  # pragma: no cover


def txn_text(result: dict[str, Any]) -> str:
    """The body the txn view answers for a committed ``result`` (raises the problem of a refused one)."""
    problem = problem_for_result(result)
    if problem is not None:
        raise problem
    payload = {"succeeded": result["succeeded"], "results": result["results"], "revision": result["revision"]}
    # What jsonify produces for the view's payload (compact, key order kept, ASCII, newline).
    return json.dumps(payload, separators=(",", ":")) + "\n"


def answer_headers(data: bytes, revision: Any, node_id: str, request_id: str) -> list[tuple[str, str]]:
    """The headers of a fast path's 200 answer, as the views send them."""
    return [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        (REVISION_HEADER, str(revision)),
        (NODE_HEADER, node_id),
        ("X-Request-ID", request_id),
    ]


def failure_response(app: flask.Flask, environ: dict[str, Any], request_id: str, exc: Exception) -> Any:
    """Flask's answer to ``exc`` raised by a fast path's request (its error handlers and hooks, in a
    request context of ``environ``), under the request id the fast path already used."""
    environ["HTTP_X_REQUEST_ID"] = request_id  # before_request binds the id we already used
    environ["wsgi.input"] = io.BytesIO(b"")
    with app.request_context(environ):
        rv = app.preprocess_request()
        if rv is None:
            rv = app.handle_user_exception(exc)
        return app.finalize_request(rv)


def fast_put_middleware(app: flask.Flask, ctx: DBContext) -> Callable[..., Any]:
    """WSGI wrapper answering plainly well-formed ``PUT /v1/kv/<key>`` on the leader without Flask.

    The fast path only takes a request when the Flask view would certainly reach ``node.propose``: method
    PUT, an ASCII path under ``/v1/kv/`` with a non-empty key, no query string, ``Content-Type:
    application/json``, a ``Content-Length`` within the body limit, a JSON object with exactly the
    view's fields and types, a command that ``put_command`` accepts, and this member leading. Anything
    else (before any side effect) is handed to Flask with the body it already read, so the answer is
    Flask's. A successful commit is answered with the same bytes and headers as the view (``jsonify``,
    ``X-Agenda-Revision``, ``X-Agenda-Node``, ``X-Request-ID``, the request metric); a failure after
    the proposal (node error, refused result, unexpected exception) is turned into the response by
    Flask's own error handlers and ``after_request`` hooks inside a request context.
    """
    flask_wsgi = app.wsgi_app
    node, metrics = ctx.node, ctx.metrics
    node_id = node.self_peer.node_id

    def fallback(environ: dict[str, Any], start_response: Any, raw: bytes | None) -> Any:
        if raw is not None:
            environ["wsgi.input"] = io.BytesIO(raw)
        return flask_wsgi(environ, start_response)

    def failure(environ: dict[str, Any], start_response: Any, request_id: str, exc: Exception) -> Any:
        return failure_response(app, environ, request_id, exc)(environ, start_response)

    def plain_json_request(environ: dict[str, Any]) -> int | None:
        """The body's length when the request is a candidate (no query string, a JSON body within
        the limit, this member leading), else None: Flask's."""
        if (
            environ.get("QUERY_STRING")
            or environ.get("SCRIPT_NAME")
            # a chunked body is read to its end by Flask whatever Content-Length says
            or environ.get("HTTP_TRANSFER_ENCODING")
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != "application/json"
        ):
            return None
        length_text = environ.get("CONTENT_LENGTH", "")
        if (
            not (length_text.isascii() and length_text.isdigit())
            or not 0 < int(length_text) <= MAX_BODY_BYTES
        ):
            return None
        if not node.is_leader():
            return None
        return int(length_text)

    def answer(
        start_response: Any, text: str, revision: Any, request_id: str, metric: tuple[str, str, int]
    ) -> list[bytes]:
        data = text.encode()
        start_response("200 OK", answer_headers(data, revision, node_id, request_id))
        with metrics.lock:
            metrics.requests[metric] += 1
        return [data]

    def propose(
        environ: dict[str, Any],
        start_response: Any,
        command: dict[str, Any],
        render: Callable[[dict[str, Any]], str],
        metric: tuple[str, str, int],
    ) -> Any:
        """Propose a checked write, wait for its result and answer it as the view would."""
        request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        binding = bind_request_id(request_id)
        try:
            result = node.propose(command)
            problem = problem_for_result(result)
            if problem is not None:
                raise problem
            text = render(result)
        except Exception as exc:
            return failure(environ, start_response, request_id, exc)
        finally:
            binding.reset()
        return answer(start_response, text, result["revision"], request_id, metric)

    def txn(environ: dict[str, Any], start_response: Any) -> Any:
        """``POST /v1/txn``: the view's checks (``json_body`` types, ``txn_command``), then propose."""
        length = plain_json_request(environ)
        if length is None:
            return flask_wsgi(environ, start_response)
        raw = environ["wsgi.input"].read(length)
        command = txn_body_command(raw)
        if command is None:
            return fallback(environ, start_response, raw)
        return propose(environ, start_response, command, txn_text, ("POST", TXN_RULE, 200))

    def range_read(environ: dict[str, Any], start_response: Any) -> Any:
        """``GET /v1/kv``: the view's argument checks, the read barrier (unless stale), the read."""
        query = environ.get("QUERY_STRING", "")
        if environ.get("SCRIPT_NAME") or not node.is_leader():
            return flask_wsgi(environ, start_response)
        parsed = range_args(query)
        if parsed is None:
            return flask_wsgi(environ, start_response)
        prefix, start, limit, consistency = parsed

        request_id = sanitize_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        binding = bind_request_id(request_id)
        try:
            if consistency == "linearizable":
                node.read_barrier()
            records, more, revision = node.read(
                lambda sm: (*sm.range_records(prefix, start, limit), sm.revision)
            )
            text = page_text(records, revision, more)
        except Exception as exc:
            return failure(environ, start_response, request_id, exc)
        finally:
            binding.reset()
        return answer(start_response, text + "\n", revision, request_id, ("GET", RANGE_RULE, 200))

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        if method == "POST" and path == TXN_RULE:
            return txn(environ, start_response)
        if method == "GET" and path == RANGE_RULE:
            return range_read(environ, start_response)
        if (
            method != "PUT"
            or not path.startswith(_KV_PREFIX)
            or len(path) == len(_KV_PREFIX)
            or not path.isascii()
        ):
            return flask_wsgi(environ, start_response)
        length = plain_json_request(environ)
        if length is None:
            return flask_wsgi(environ, start_response)
        raw = environ["wsgi.input"].read(length)
        command = put_body_command(path[len(_KV_PREFIX) :], raw)
        if command is None:
            return fallback(environ, start_response, raw)
        return propose(environ, start_response, command, put_text, ("PUT", PUT_RULE, 200))

    return middleware


class _Pending:
    """One fast request between its proposal (or its read round) and its answer."""

    __slots__ = ("deadline", "read", "request", "request_id", "respond", "rule")

    def __init__(
        self,
        request: Request,
        request_id: str,
        respond: Callable[[bytes, bool], None],
        rule: str,
        deadline: float,
        read: Callable[[Any], tuple[str, int]] | None = None,
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.respond = respond
        self.rule = rule
        self.deadline = deadline
        self.read = read  # a read: the body and revision it answers, from the state machine


class _ReadRound:
    """One read barrier (:meth:`Node.read_round`) and the readers that arrived before it began."""

    __slots__ = ("readers", "started")

    def __init__(self, readers: list[_Pending], started: float) -> None:
        self.readers = readers
        self.started = started


class LoopFastPath:
    """The fast paths of :func:`fast_put_middleware` for :class:`~agenda.common.loopserver.LoopWSGIServer`,
    plus single-key reads: plainly well-formed ``PUT /v1/kv/<key>``, ``POST /v1/txn``, ``GET /v1/kv``
    and ``GET /v1/kv/<key>``, with the views' checks, answered with the views' bytes, but without a
    thread waiting for each. Writes: the loop thread submits the command (:meth:`Node.submit`) and
    writes the tick thread's result. Linearizable reads: one read round at a time
    (:meth:`Node.read_round`, shared like :class:`~agenda.db.barrier.SharedBarrier`: the readers that
    arrived while a round was in flight share the next one, so each reader's round began after it
    arrived), then the local state; ``consistency=stale`` reads it at once, on any member.

    A request that would not certainly be answered so is declined before any side effect, and a worker
    thread answers it through Flask (and the WSGI fast path) as before, forwarding to the leader
    included. A request without an outcome after the node's ``proposal_timeout`` is answered as the
    waiting view would have been (503, outcome unknown).
    """

    def __init__(
        self,
        app: flask.Flask,
        ctx: DBContext,
        call_soon: Callable[[Callable[[], None]], None],
        server_version: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._app = app
        self._node = ctx.node
        self._metrics = ctx.metrics
        self._node_id = ctx.node.self_peer.node_id
        self._call_soon = call_soon
        self._server_version = server_version
        self._clock = clock
        # In flight by id: whoever pops an entry first (the outcome, or expiry) answers it.
        self._inflight: dict[int, _Pending] = {}
        self._deadlines: collections.deque[_Pending] = collections.deque()  # one timeout: arrival order
        self._round: _ReadRound | None = None
        self._next_readers: list[_Pending] = []

    def handle(self, request: Request, respond: Callable[[bytes, bool], None]) -> bool:
        path, query = request.path, request.query
        if "%" in path:  # a path the WSGI server would decode first
            return False
        if request.method == "GET":
            return self._start_read(request, path, query, respond)
        headers, body = request.headers, request.body
        if request.method == "PUT" and path.startswith(_KV_PREFIX) and len(path) > len(_KV_PREFIX):
            rule = PUT_RULE
        elif request.method == "POST" and path == TXN_RULE:
            rule = TXN_RULE
        else:
            return False
        if (
            "?" in request.target
            or headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json"
            or not 0 < len(body) <= MAX_BODY_BYTES
            or not self._node.is_leader()
        ):
            return False
        command = (
            put_body_command(path[len(_KV_PREFIX) :], body) if rule == PUT_RULE else txn_body_command(body)
        )
        if command is None:
            return False
        pending = self._pending(request, respond, rule)
        key = id(pending)
        self._inflight[key] = pending
        binding = bind_request_id(pending.request_id)
        try:
            self._node.submit(
                command, lambda result, error: self._call_soon(lambda: self._finish(key, result, error))
            )
        except Exception:  # nothing was proposed (leadership just moved...): Flask answers it
            del self._inflight[key]
            return False
        finally:
            binding.reset()
        self._deadlines.append(pending)
        return True

    def expire(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and (deadlines[0].deadline <= now or id(deadlines[0]) not in self._inflight):
            pending = deadlines.popleft()
            if self._inflight.pop(id(pending), None) is not None:
                self._answer_failure(pending, self._node.timed_out())
        overdue = self._round
        if overdue is not None and now - overdue.started > self._node.proposal_timeout:
            # Its readers were answered above; a late outcome is ignored; the next readers get a new round.
            self._round = None
            self._start_round()

    def _pending(
        self,
        request: Request,
        respond: Callable[[bytes, bool], None],
        rule: str,
        read: Callable[[Any], tuple[str, int]] | None = None,
    ) -> _Pending:
        request_id = sanitize_request_id(request.headers.get("x-request-id")) or new_request_id()
        deadline = self._clock() + self._node.proposal_timeout
        return _Pending(request, request_id, respond, rule, deadline, read)

    # ------------------------------------------------------------------ reads

    def _start_read(
        self, request: Request, path: str, query: str, respond: Callable[[bytes, bool], None]
    ) -> bool:
        read: Callable[[Any], tuple[str, int]]
        if path == RANGE_RULE:
            parsed = range_args(query)
            if parsed is None:
                return False
            prefix, start, limit, consistency = parsed

            def read(sm: Any) -> tuple[str, int]:
                records, more = sm.range_records(prefix, start, limit)
                return page_text(records, sm.revision, more) + "\n", sm.revision

            rule = RANGE_RULE
        elif path.startswith(_KV_PREFIX) and len(path) > len(_KV_PREFIX):
            key = path[len(_KV_PREFIX) :]
            consistency = _KEY_READ_QUERIES.get(query, "")
            if not consistency or request.body:
                return False
            try:
                validate_key(key)
            except StateMachineError:
                return False

            def read(sm: Any) -> tuple[str, int]:
                record = sm.record(key)
                if record is None:
                    raise key_not_found(key, sm.revision)
                return item_text(key, record) + "\n", sm.revision

            rule = PUT_RULE  # the key's rule, whatever the method
        else:
            return False
        if consistency == "stale":
            self._serve_read(self._pending(request, respond, rule, read))
            return True
        if not self._node.is_leader():
            return False  # Flask forwards it to the leader
        reader = self._pending(request, respond, rule, read)
        self._inflight[id(reader)] = reader
        self._deadlines.append(reader)
        self._next_readers.append(reader)
        if self._round is None:
            self._start_round()
        return True

    def _start_round(self) -> None:
        readers = [reader for reader in self._next_readers if id(reader) in self._inflight]
        self._next_readers = []
        if not readers:
            return
        round_ = self._round = _ReadRound(readers, self._clock())
        try:
            self._node.read_round(
                lambda error: self._call_soon(lambda: self._round_done(round_, error)), len(readers)
            )
        except Exception as exc:  # not leading any more: these readers get the view's answer to it
            self._round_done(round_, exc)

    def _round_done(self, round_: _ReadRound, error: Exception | None) -> None:
        if self._round is not round_:
            return  # given up as overdue (its readers were answered as timed out)
        self._round = None
        for reader in round_.readers:
            if self._inflight.pop(id(reader), None) is None:
                continue
            if error is None:
                self._serve_read(reader)
            else:
                self._answer_failure(reader, error)
        self._start_round()

    def _serve_read(self, reader: _Pending) -> None:
        try:
            text, revision = self._node.read(reader.read)
        except Exception as exc:  # the key does not exist: the view's 404
            self._answer_failure(reader, exc)
            return
        self._answer_ok(reader, text, revision)

    # ------------------------------------------------------------------ answers

    def _finish(self, key: int, result: dict[str, Any] | None, error: Exception | None) -> None:
        """Loop thread: answer a proposal's outcome, unless it was already answered as timed out."""
        pending = self._inflight.pop(key, None)
        if pending is None:
            return
        if error is None and result is not None:
            try:
                text = put_text(result) if pending.rule == PUT_RULE else txn_text(result)
            except Exception as exc:  # a refused result: its problem
                error = exc
            else:
                self._answer_ok(pending, text, result["revision"])
                return
        self._answer_failure(pending, error or OutcomeUnknown("no result"))

    def _answer_ok(self, pending: _Pending, text: str, revision: int) -> None:
        data = text.encode()
        headers = answer_headers(data, revision, self._node_id, pending.request_id)
        with self._metrics.lock:
            self._metrics.requests[(pending.request.method, pending.rule, 200)] += 1
        close = pending.request.close
        pending.respond(
            response_bytes("HTTP/1.1", "200 OK", headers, data, self._server_version, close=close), close
        )

    def _answer_failure(self, pending: _Pending, exc: Exception) -> None:
        request = pending.request
        header_list = [(name, value) for name, value in request.headers.items() if name != "content-length"]
        environ = EnvironBuilder(
            path=request.path, method=request.method, headers=header_list, query_string=request.query
        ).get_environ()
        captured: list[Any] = []
        response = failure_response(self._app, environ, pending.request_id, exc)
        body = b"".join(
            response(environ, lambda status, headers, exc_info=None: captured.extend((status, headers)))
        )
        status, headers = captured
        close = request.close
        pending.respond(
            response_bytes("HTTP/1.1", status, headers, body, self._server_version, close=close), close
        )
