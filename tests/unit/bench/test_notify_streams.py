"""The pure parts of bench/notify_streams.py: the HTTP/SSE client's parsing, the latency statistics, the
/proc readings and the tables. No process is started and nothing touches the network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from bench import _stats as stats
from bench import notify_streams as ns

from agenda.domain.model import format_time
from agenda.gateway.streams import HEARTBEAT, event_text


def chunked(*pieces: bytes, end: bool = True) -> bytes:
    """`pieces` as an HTTP/1.1 chunked body, the way gunicorn writes a streamed response."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)
    return body + (b"0\r\n\r\n" if end else b"")


def record(event_id: str, created: datetime, *, user: str = ns.WATCHED, kind: str = "invited") -> dict:
    return {
        "id": f"n-{event_id}",
        "user": user,
        "kind": kind,
        "event_id": event_id,
        "group_id": None,
        "detail": "",
        "created": format_time(created),
        "cursor": f"{int(created.timestamp() * 1_000_000):020d}.n-{event_id}",
    }


def step(clients: int = 16, p50: float = 10.0, p99: float = 20.0, rps: float = 100.0) -> stats.StepResult:
    return stats.StepResult(clients, 10.0, int(rps * 10), 0, rps, rps, p50, p99, {201: int(rps * 10)}, {})


# ------------------------------------------------------------------------------------------- HTTP


def test_parse_head_status_and_lower_cased_headers() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"X-Accel-Buffering: no\r\n\r\n"
    )
    status, headers = ns.parse_head(head)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["x-accel-buffering"] == "no"


@pytest.mark.parametrize(
    "head", [b"garbage\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"]
)
def test_parse_head_refuses_what_is_not_http(head: bytes) -> None:
    with pytest.raises(ValueError, match="not a"):
        ns.parse_head(head)


def test_stream_request_asks_for_the_stream_with_the_token() -> None:
    request = ns.stream_request("127.0.0.1", 8443, "tok.en")
    assert request.startswith(b"GET /v1/notifications/stream HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n")
    assert b"Authorization: Bearer tok.en\r\n" in request
    assert request.endswith(b"\r\n\r\n")


def test_chunked_decoder_whole_body() -> None:
    decoder = ns.ChunkedDecoder()
    assert (
        decoder.feed(chunked(b"retry: 2000\n\n", b": keep-alive\n\n")) == b"retry: 2000\n\n: keep-alive\n\n"
    )
    assert decoder.done


def test_chunked_decoder_any_split_gives_the_same_body() -> None:
    wire = chunked(b"hello ", b"x" * 300, b" world") + b""
    for size in (1, 2, 3, 7, 64):
        decoder = ns.ChunkedDecoder()
        out = b"".join(decoder.feed(wire[i : i + size]) for i in range(0, len(wire), size))
        assert out == b"hello " + b"x" * 300 + b" world"
        assert decoder.done


def test_chunked_decoder_extensions_and_trailers() -> None:
    decoder = ns.ChunkedDecoder()
    assert decoder.feed(b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n") == b"hello"
    assert decoder.done


def test_chunked_decoder_open_stream_is_not_done() -> None:
    decoder = ns.ChunkedDecoder()
    assert decoder.feed(chunked(b"data", end=False)) == b"data"
    assert not decoder.done


@pytest.mark.parametrize("wire", [b"zz\r\n", b"3\r\nabcXY", b"-1\r\n"])
def test_chunked_decoder_refuses_a_malformed_body(wire: bytes) -> None:
    with pytest.raises(ValueError, match="chunk"):
        ns.ChunkedDecoder().feed(wire)


# -------------------------------------------------------------------------------------------- SSE


def test_sse_parser_reads_what_the_gateway_sends() -> None:
    created = datetime(2030, 1, 1, 12, tzinfo=UTC)
    note = record("e1", created)
    wire = b"retry: 2000\n\n" + event_text(note) + HEARTBEAT
    items = ns.SseParser().feed(wire)
    assert [item.kind for item in items] == ["retry", "event", "comment"]
    assert items[0].value == "2000"
    assert items[1].event == "notification"
    assert items[1].id == note["cursor"]
    assert json.loads(items[1].data) == note
    assert items[2].value == "keep-alive"


def test_sse_parser_through_chunked_pieces_split_anywhere() -> None:
    notes = [record(f"e{i}", datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=i)) for i in range(3)]
    body = b"retry: 2000\n\n" + b"".join(event_text(n) + HEARTBEAT for n in notes)
    wire = chunked(*(body[i : i + 17] for i in range(0, len(body), 17)), end=False)
    decoder, parser, items = ns.ChunkedDecoder(), ns.SseParser(), []
    for i in range(0, len(wire), 5):
        items += parser.feed(decoder.feed(wire[i : i + 5]))
    assert [json.loads(i.data) for i in items if i.kind == "event"] == notes
    assert sum(1 for i in items if i.kind == "comment") == 3
    assert sum(1 for i in items if i.kind == "retry") == 1


def test_sse_parser_multi_line_data_crlf_and_defaults() -> None:
    items = ns.SseParser().feed(b"data: one\r\ndata:two\r\n\r\n\n\nevent: x\n\n")
    assert items == [ns.SseItem("event", "one\ntwo", "message", None)]


def test_sse_parser_keeps_an_unfinished_line() -> None:
    parser = ns.SseParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\n") == []
    assert parser.feed(b"\n") == [ns.SseItem("event", '{"a": 1}')]


def test_sse_parser_ignores_a_non_numeric_retry() -> None:
    assert ns.SseParser().feed(b"retry: soon\n\n") == []


# ------------------------------------------------------------------------------------- statistics


def test_rfc3339_seconds() -> None:
    moment = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert ns.rfc3339_seconds(format_time(moment)) == pytest.approx(moment.timestamp())
    assert ns.rfc3339_seconds("2030-05-06T09:08:09+02:00") == pytest.approx(
        moment.replace(microsecond=0).timestamp()
    )
    with pytest.raises(ValueError, match="offset"):
        ns.rfc3339_seconds("2030-05-06T07:08:09")


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 201))  # 1..200
    assert ns.percentile(values, 50) == 100
    assert ns.percentile(values, 99) == 198
    assert ns.percentile(values, 100) == 200
    assert ns.percentile([5.0], 99) == 5.0
    assert ns.percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        ns.percentile([1.0], 0)


def test_match_latencies_first_arrival_per_event_only_the_watched_invitations() -> None:
    created = datetime(2030, 1, 1, tzinfo=UTC)
    t = created.timestamp()
    received = [
        (t + 0.010, record("e1", created)),
        (t + 0.030, record("e1", created)),  # the same notification again (a catch-up): a duplicate
        (t + 0.020, record("e2", created)),
        (t + 0.001, record("e3", created, user="someone-else")),
        (t + 0.001, record("e2", created, kind="changed")),
        (t + 0.001, record("not-sent", created)),
    ]
    latencies, duplicates = ns.match_latencies(["e1", "e2", "e3"], received, ns.WATCHED)
    assert latencies == {"e1": pytest.approx(10.0), "e2": pytest.approx(20.0)}
    assert duplicates == 1


def test_summarize_latency_counts_the_missing() -> None:
    level = ns.summarize_latency(1000, 200, [float(v) for v in range(1, 199)], duplicates=2)
    assert (level.sent, level.arrived, level.missing) == (200, 198, 2)
    assert level.p50_ms == 99.0
    assert level.max_ms == 198.0
    assert level.as_dict()["missing"] == 2
    empty = ns.summarize_latency(1, 5, [])
    assert (empty.arrived, empty.p99_ms, empty.max_ms) == (0, None, None)


def test_stream_owners_round_robin() -> None:
    owners = ns.stream_owners(1000, [f"u{i}" for i in range(50)])
    assert len(owners) == 1000
    assert {owners.count(f"u{i}") for i in range(50)} == {20}
    assert ns.stream_owners(3, ["a", "b"]) == ["a", "b", "a"]
    assert ns.stream_owners(0, []) == []
    with pytest.raises(ValueError, match="user"):
        ns.stream_owners(1, [])


def test_order_of_runs_alternates_and_mirrors() -> None:
    assert ns.order_of_runs(3) == [(1, False), (1, True), (2, True), (2, False), (3, False), (3, True)]
    assert ns.order_of_runs(1) == [(1, False), (1, True)]


@pytest.mark.parametrize(("value", "verdict"), [(1.0, "MET"), (1.5, "MET"), (1.51, "NOT MET"), (None, "n/a")])
def test_p99_verdict(value: float | None, verdict: str) -> None:
    assert ns.p99_verdict(value) == verdict


def test_check_streams() -> None:
    now = 100.0
    states = [
        (True, None, 99.0),  # fed a second ago: alive
        (True, None, 90.0),  # fed 10 s ago with a 5 s heartbeat + 3 s slack: silent
        (True, "closed by the gateway", 50.0),
        (False, "HTTP 401: unauthorized", 0.0),
        (False, "HTTP 401: unauthorized", 0.0),
    ]
    check = ns.check_streams(states, now, heartbeat=5.0, slack=3.0)
    assert (check.wanted, check.opened, check.alive) == (5, 3, 1)
    assert check.ended == {"open but silent": 1, "closed by the gateway": 1, "HTTP 401: unauthorized": 2}
    assert not check.ok
    assert ns.check_streams([(True, None, 99.0)] * 3, now, 5.0, 3.0).ok


# ------------------------------------------------------------------------------------------ /proc


def test_socket_inodes() -> None:
    targets = ["socket:[123]", "pipe:[5]", "/dev/null", "socket:[77]", "socket:[x]", "anon_inode:[eventpoll]"]
    assert ns.socket_inodes(targets) == {123, 77}


PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1 0 100 0
   1: 0100007F:20FB 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0
   2: 0100007F:20FB 0100007F:C351 08 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 100 0
   3: 0100007F:C352 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 100 0
   4: 0100007F:C353 0100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 2000 1 0 100 0
"""
PROC_NET_UNIX = """\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 1004 /run/x.sock
0000000000000000: 00000003 00000000 00000000 0001 03 1005
"""


def test_parse_proc_net_tables() -> None:
    assert ns.parse_proc_net_tcp(PROC_NET_TCP) == [
        (8443, "0A", 1000),
        (8443, "01", 1001),
        (8443, "08", 1002),
        (50002, "01", 1003),
        (50003, "01", 2000),
    ]
    assert ns.parse_proc_net_unix(PROC_NET_UNIX) == {1004, 1005}


def test_inbound_connections_counts_clients_of_the_port_only() -> None:
    # The worker holds: the listener (1000), two client connections (1001 established, 1002 half-closed),
    # its own connection to a backend (1003), a unix socket (1004) and one already reset by its client
    # (1099: no longer in the kernel's table, still held by the worker).
    held = {1000, 1001, 1002, 1003, 1004, 1099}
    tcp = ns.parse_proc_net_tcp(PROC_NET_TCP)
    unix = ns.parse_proc_net_unix(PROC_NET_UNIX)
    assert ns.inbound_connections(held, tcp, unix, 8443) == 3
    assert ns.inbound_connections({1000, 1003}, tcp, unix, 8443) == 0


def test_memory_kb() -> None:
    status = "Name:\tgunicorn\nVmHWM:\t  109240 kB\nVmRSS:\t  105568 kB\nThreads:\t3\n"
    assert ns.memory_kb(status) == {"VmHWM": 109240, "VmRSS": 105568}
    assert ns.memory_kb("Name: x\n") == {}


def test_children_of_reads_the_parent_after_the_command_name() -> None:
    stats_text = {
        10: "10 (gunicorn) S 1 10 10 0",
        11: "11 (gunicorn: worker) S 10 10 10 0",  # a name with spaces and a parenthesis-free parent
        12: "12 (odd) name) S 10 12 12 0",
        13: "13 (other) S 2 13 13 0",
        14: "garbage",
    }
    assert ns.children_of(10, stats_text) == [11, 12]


# -------------------------------------------------------------------------------- sides and tables


def run(number: int, streams: int, p99: float, *, ok: bool = True) -> ns.LoadRun:
    check = None
    if streams:
        check = ns.StreamCheck(streams, streams, streams if ok else streams - 1, {} if ok else {"x": 1})
    return ns.LoadRun(
        number, streams, step(p99=p99), 3.0, 60.0 + streams / 20, streams, check, 5.0, 9.0, 10.0
    )


def test_load_sides_medians_per_side() -> None:
    runs = [run(1, 0, 20.0), run(1, 1000, 24.0), run(2, 1000, 30.0), run(2, 0, 22.0), run(3, 0, 40.0)]
    runs.append(run(3, 1000, 26.0))
    without, with_ = ns.load_sides(runs)
    assert (without.streams, without.summary.p99_ms, without.connections) == (0, 22.0, 0)
    assert (with_.streams, with_.summary.p99_ms, with_.connections) == (1000, 26.0, 1000)
    assert with_.rss_mib == pytest.approx(110.0)
    assert stats.ratio(with_.summary.p99_ms, without.summary.p99_ms) == pytest.approx(26 / 22)


def test_load_run_streams_ok_and_dict() -> None:
    assert run(1, 0, 20.0).streams_ok
    assert run(1, 10, 20.0).streams_ok
    lost = run(1, 10, 20.0, ok=False)
    assert not lost.streams_ok
    data = lost.as_dict()
    assert data["stream_check"] == {"wanted": 10, "opened": 10, "alive": 9, "ended": {"x": 1}}
    assert data["hey"]["p99_ms"] == 20.0
    json.dumps(data)


def test_format_tables() -> None:
    table = ns.format_load_table(ns.load_sides([run(1, 0, 20.0), run(1, 1000, 26.0)]))
    lines = table.splitlines()
    assert "p99 ms" in lines[0]
    assert "gw conns" in lines[0]
    assert lines[2].split() == ["0", "|", "100.0", "10.00", "20.00", "0", "|", "3.00", "60.0", "0"]
    assert lines[3].split()[:5] == ["1000", "|", "100.0", "10.00", "26.00"]
    levels = [ns.summarize_latency(1, 200, [5.0] * 200), ns.summarize_latency(1000, 200, [6.0] * 199)]
    latency = ns.format_latency_table(levels).splitlines()
    assert latency[2].split() == ["1", "|", "200", "200", "0", "|", "5.00", "5.00", "5.00"]
    assert latency[3].endswith("<-- MISSING NOTIFICATIONS")


# ------------------------------------------------------------------------------------- arguments


def test_defaults_match_the_issue() -> None:
    args = ns.parse_args([])
    assert (args.streams, args.stream_users, args.clients, args.duration, args.runs) == (
        1000,
        50,
        16,
        10.0,
        3,
    )
    assert (args.invitations, args.invite_interval, args.heartbeat) == (200, 0.05, 5.0)
    assert ns.connections_of(1000) == 4000
    assert ns.connections_of(5000) == 10100


@pytest.mark.parametrize(
    "argv", [["--streams", "0"], ["--heartbeat", "0.1"], ["--runs", "-1"], ["--duration", "x"]]
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ns.parse_args(argv)
    assert exc.value.code == 2


def test_gunicorn_argv_is_the_deployed_serving_model() -> None:
    argv = ns.gunicorn_argv(8443, "/c.crt", "/c.key", 4000, python="/venv/bin/python", settings="/s.py")
    assert argv[:5] == ["/venv/bin/python", "-m", "gunicorn", "--config", "/s.py"]
    joined = " ".join(argv)
    assert "-k gevent" in joined
    assert "--worker-connections 4000" in joined
    assert "-w 1" in joined
    assert "--bind 127.0.0.1:8443" in joined
    assert "--certfile /c.crt --keyfile /c.key" in joined
    assert argv[-1] == "agenda.gateway.cli:wsgi()"


def test_the_gunicorn_settings_patch_first_preload_and_call_the_gateways_hook() -> None:
    lines = [line for line in ns.GUNICORN_SETTINGS.splitlines() if line.strip()]
    assert lines[:2] == ["from gevent import monkey", "monkey.patch_all()"]
    assert "preload_app = True" in lines
    assert "def post_worker_init(worker):" in lines
