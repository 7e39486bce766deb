"""Track and notify scripts behave as keepalived's: same counting, same priorities, same argv, same order."""

import http.server
import itertools
import logging
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agenda.vrrp.scripts import (
    Notifier,
    TrackScriptRunner,
    TrackScriptSpec,
    TrackState,
    effective_priority,
    notify_commands,
    run_command,
)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def process_gone(pid: int) -> bool:
    """True once pid no longer runs (a zombie awaiting a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


# ---------------------------------------------------------------- TrackState


def test_track_state_starts_failed_and_one_success_makes_it_ok() -> None:
    track = TrackState(fall=3, rise=5)
    assert not track.ok
    assert track.record(True)
    assert track.ok


def test_track_state_first_failure_then_needs_full_rise() -> None:
    track = TrackState(fall=2, rise=3)
    assert not track.record(False)
    assert not track.record(True)
    assert not track.record(True)
    assert track.record(True)
    assert track.ok


@pytest.mark.parametrize(("fall", "rise"), list(itertools.product(range(1, 5), repeat=2)))
def test_track_state_fall_and_rise_with_resets(fall: int, rise: int) -> None:
    track = TrackState(fall=fall, rise=rise)
    track.record(True)
    for _ in range(fall - 1):
        assert not track.record(False)
    assert track.record(True) is False  # a success resets the failure streak...
    for _ in range(fall - 1):
        assert not track.record(False)
    assert track.ok
    assert track.record(False)  # ...so exactly `fall` consecutive failures are needed
    assert not track.ok
    for _ in range(rise - 1):
        assert not track.record(True)
    assert not track.record(False)  # a failure resets the success streak
    for _ in range(rise - 1):
        assert not track.record(True)
    assert not track.ok
    assert track.record(True)
    assert track.ok


@pytest.mark.parametrize(("fall", "rise"), list(itertools.product(range(1, 4), repeat=2)))
def test_track_state_matches_streak_definition_for_every_history(fall: int, rise: int) -> None:
    """Every history up to 8 results against an independent definition in terms of trailing runs.

    Start is modelled as rise-1 virtual successes in the failed state: from failed, OK iff the trailing
    run of successes reaches `rise`; from OK, failed iff the trailing run of failures reaches `fall`.
    """
    for length in range(9):
        for history in itertools.product((False, True), repeat=length):
            track, ok, seen = TrackState(fall=fall, rise=rise), False, [True] * (rise - 1)
            for result in history:
                seen.append(result)
                run = len(seen) - next((i + 1 for i in range(len(seen) - 1, -1, -1) if seen[i] != result), 0)
                expected = (ok or run >= rise) if result else (ok and run < fall)
                assert track.record(result) == (expected != ok), history
                ok = expected
                assert track.ok == ok, history


@pytest.mark.parametrize(("fall", "rise"), [(0, 1), (1, 0), (-1, 2)])
def test_track_state_rejects_non_positive_counts(fall: int, rise: int) -> None:
    with pytest.raises(ValueError, match="fall and rise"):
        TrackState(fall=fall, rise=rise)


# ---------------------------------------------------------------- effective_priority


@pytest.mark.parametrize(
    ("base", "tracked", "expected"),
    [
        (100, [], 100),
        (100, [(0, True)], 100),
        (100, [(0, False)], None),
        (255, [(0, False)], None),  # even the owner faults on a weight-0 failure
        (100, [(10, True)], 110),
        (100, [(10, False)], 100),
        (100, [(-20, True)], 100),
        (100, [(-20, False)], 80),
        (100, [(10, True), (5, True), (-20, False), (-3, True)], 95),
        (100, [(10, True), (0, True), (-30, False)], 80),
        (250, [(10, True)], 254),  # never reaches 255 (owner)
        (10, [(-50, False)], 1),  # never reaches 0 (resign)
        (1, [(-1, False)], 1),
        (254, [(1, True)], 254),
        (255, [(-50, False), (10, True)], 255),  # keepalived ignores weights for the address owner
        (150, iter([(5, True)]), 155),  # any iterable, consumed once
    ],
)
def test_effective_priority(base: int, tracked: list[tuple[int, bool]], expected: int | None) -> None:
    assert effective_priority(base, tracked) == expected


# ---------------------------------------------------------------- notify_commands


def test_notify_commands_specific_then_generic_with_keepalived_arguments() -> None:
    assert notify_commands("VI_1", "MASTER", 150, "/bin/master.sh --up", "/bin/notify.sh") == [
        ["/bin/master.sh", "--up"],
        ["/bin/notify.sh", "INSTANCE", "VI_1", "MASTER", "150"],
    ]


@pytest.mark.parametrize("state", ["MASTER", "BACKUP", "FAULT", "STOP"])
def test_notify_commands_every_state(state: str) -> None:
    assert notify_commands("VI_2", state, 0, "", "n") == [["n", "INSTANCE", "VI_2", state, "0"]]


def test_notify_commands_empty_means_none_and_quoting_is_honoured() -> None:
    assert notify_commands("VI_1", "BACKUP", 100, "", "") == []
    assert notify_commands("VI_1", "BACKUP", 100, "   ", "") == []
    assert notify_commands("VI_1", "FAULT", 100, "'/opt/my dir/f.sh' \"a b\" c", "") == [
        ["/opt/my dir/f.sh", "a b", "c"]
    ]


@pytest.mark.parametrize(
    ("state", "specific"), [("INIT", ""), ("master", ""), ("STOPPED", ""), ("MASTER", "'unbalanced")]
)
def test_notify_commands_rejects_bad_input(state: str, specific: str) -> None:
    with pytest.raises(ValueError, match=r"state|quotation"):
        notify_commands("VI_1", state, 100, specific, "")


# ---------------------------------------------------------------- run_command


def test_run_command_reports_status_and_missing_executable(tmp_path: Path) -> None:
    assert run_command([str(script(tmp_path, "ok.sh", "exit 0\n"))], 5) == (0, "exit status 0")
    assert run_command([str(script(tmp_path, "bad.sh", "exit 3\n"))], 5)[0] == 3
    status, detail = run_command([str(tmp_path / "missing")], 5)
    assert status is None
    assert detail.startswith("cannot run")
    assert run_command([], 5)[0] is None


def test_run_command_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hang = script(tmp_path, "hang.sh", f"sleep 30 &\necho $! > {pidfile}\nwait\n")
    started = time.monotonic()
    status, detail = run_command([str(hang)], 0.5)
    assert status is None
    assert "timed out" in detail
    assert time.monotonic() - started < 5
    assert wait_until(lambda: process_gone(int(pidfile.read_text())))


def test_run_command_abort_kills_promptly(tmp_path: Path) -> None:
    abort = threading.Event()
    threading.Timer(0.2, abort.set).start()
    started = time.monotonic()
    assert run_command([str(script(tmp_path, "hang.sh", "exec sleep 30\n"))], 30, abort)[0] is None
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- TrackScriptRunner


def spec(name: str, command: str = "", **overrides: float) -> TrackScriptSpec:
    values: dict[str, float] = {"interval": 0.02, "timeout": 2.0, "fall": 2, "rise": 2, "weight": 0}
    values.update(overrides)
    return TrackScriptSpec(
        name,
        command,
        values["interval"],
        values["timeout"],
        int(values["fall"]),
        int(values["rise"]),
        int(values["weight"]),
    )


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, name: str, ok: bool) -> None:
        with self.lock:
            self.calls.append((name, ok))

    def snapshot(self) -> list[tuple[str, bool]]:
        with self.lock:
            return list(self.calls)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def runners() -> Iterator[list[TrackScriptRunner]]:
    started: list[TrackScriptRunner] = []
    yield started
    for runner in started:
        runner.stop()


class Scripted:
    """A run_once that plays back results per script, then repeats the last one forever."""

    def __init__(self, results: dict[str, list[bool]]) -> None:
        self.results = results
        self.runs = dict.fromkeys(results, 0)
        self.lock = threading.Lock()

    def __call__(self, s: TrackScriptSpec) -> bool:
        with self.lock:
            self.runs[s.name] += 1
            queue = self.results[s.name]
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def ran(self, name: str, times: int) -> bool:
        with self.lock:
            return self.runs[name] >= times


def test_runner_reports_first_result_then_only_flips(
    recorder: Recorder, runners: list[TrackScriptRunner]
) -> None:
    a = [True, True, False, True, False, False, True, True, True]
    run_once = Scripted({"a": list(a), "b": [False]})
    runner = TrackScriptRunner([spec("a"), spec("b")], recorder, run_once=run_once)
    runners.append(runner)
    runner.start()
    # Past the playback, plus a few repeats: any spurious extra call would have shown up by then.
    assert wait_until(lambda: run_once.ran("a", len(a) + 3) and run_once.ran("b", 4))
    calls = recorder.snapshot()
    assert [c for c in calls if c[0] == "b"] == [("b", False)]
    assert [c for c in calls if c[0] == "a"] == [("a", True), ("a", False), ("a", True)]
    assert runner.states() == {"a": True, "b": False}


def test_runner_survives_exceptions(recorder: Recorder, runners: list[TrackScriptRunner]) -> None:
    def boom(_: TrackScriptSpec) -> bool:
        raise RuntimeError("check crashed")

    def bad_callback(name: str, ok: bool) -> None:
        recorder(name, ok)
        raise RuntimeError("callback crashed")

    runner = TrackScriptRunner([spec("x", fall=1, rise=1)], bad_callback, run_once=boom)
    runners.append(runner)
    runner.start()
    assert wait_until(lambda: recorder.snapshot() == [("x", False)])
    assert runner._threads[0].is_alive()


def test_runner_with_real_scripts(
    tmp_path: Path, recorder: Recorder, runners: list[TrackScriptRunner]
) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    check = script(tmp_path, "check.sh", f'test -e "{flag}"\n')
    specs = [
        spec("file", f"'{check}'", fall=2, rise=2),
        spec("missing", str(tmp_path / "no-such-script"), fall=1, rise=1),
        spec("slow", str(script(tmp_path, "slow.sh", "exec sleep 30\n")), timeout=0.1, fall=1, rise=1),
        spec("quoting", "'unbalanced", fall=1, rise=1),
    ]
    runner = TrackScriptRunner(specs, recorder)
    runners.append(runner)
    runner.start()
    assert wait_until(lambda: len(recorder.snapshot()) == 4)
    assert sorted(recorder.snapshot()) == [
        ("file", True),
        ("missing", False),
        ("quoting", False),
        ("slow", False),
    ]
    flag.unlink()
    assert wait_until(lambda: ("file", False) in recorder.snapshot())
    flag.touch()
    assert wait_until(lambda: recorder.snapshot().count(("file", True)) == 2)
    assert runner.states() == {"file": True, "missing": False, "slow": False, "quoting": False}


def test_runner_stop_is_prompt_even_during_a_long_check(tmp_path: Path, recorder: Recorder) -> None:
    pidfile = tmp_path / "pid"
    slow = script(
        tmp_path, "s.sh", f"echo $$ > '{pidfile}.tmp'\nmv '{pidfile}.tmp' '{pidfile}'\nexec sleep 30\n"
    )
    runner = TrackScriptRunner([spec("slow", str(slow), timeout=30)], recorder)
    runner.start()
    assert wait_until(pidfile.exists)
    started = time.monotonic()
    runner.stop(timeout=5)
    assert time.monotonic() - started < 2
    assert not runner._threads[0].is_alive()
    assert process_gone(int(pidfile.read_text()))
    assert recorder.snapshot() == []  # a check cut short by stop() is not a result


# ---------------------------------------------------------------- Notifier


@pytest.fixture
def notifier() -> Iterator[Notifier]:
    n = Notifier(timeout=5)
    yield n
    n.close(timeout=5)


def marker_script(tmp_path: Path, name: str, log: Path, pause: float = 0.2) -> str:
    body = f'echo "start {name} $*" >> "{log}"\nsleep {pause}\necho "end {name}" >> "{log}"\n'
    return str(script(tmp_path, f"{name}.sh", body))


def test_notifier_runs_transitions_in_order_without_overlap(tmp_path: Path, notifier: Notifier) -> None:
    log = tmp_path / "log"
    master, backup = marker_script(tmp_path, "master", log), marker_script(tmp_path, "backup", log)
    generic = marker_script(tmp_path, "generic", log)
    started = time.monotonic()
    notifier.notify("VI_1", "MASTER", 150, master, generic)
    notifier.notify("VI_1", "BACKUP", 100, backup, generic)
    assert time.monotonic() - started < 0.15  # notify() does not wait for the scripts
    assert wait_until(lambda: log.exists() and log.read_text().count("end") == 4)
    assert log.read_text().splitlines() == [
        "start master ",
        "end master",
        "start generic INSTANCE VI_1 MASTER 150",
        "end generic",
        "start backup ",
        "end backup",
        "start generic INSTANCE VI_1 BACKUP 100",
        "end generic",
    ]


def test_notifier_instances_do_not_wait_for_each_other(tmp_path: Path) -> None:
    done = tmp_path / "done"
    notifier = Notifier(timeout=30)
    notifier.notify("VI_1", "MASTER", 150, str(script(tmp_path, "hang.sh", "exec sleep 30\n")), "")
    notifier.notify("VI_2", "MASTER", 150, f"touch '{done}'", "")
    assert wait_until(done.exists, timeout=3)
    notifier.close(timeout=0.1)  # kills the hanging VI_1 script


def test_notifier_uses_each_jobs_own_timeout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Instances have their own notify_timeout: the one given with the job wins over the default.
    done = tmp_path / "done"
    hang = script(tmp_path, "hang.sh", "exec sleep 30\n")
    notifier = Notifier(timeout=60)
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        notifier.notify("VI_1", "MASTER", 150, str(hang), "", timeout=0.3)
        notifier.notify("VI_1", "BACKUP", 100, f"touch '{done}'", "")
        assert wait_until(done.exists)
        notifier.close(timeout=5)
    assert any("timed out after 0.3s" in r.getMessage() for r in caplog.records)


def test_notifier_kills_hanging_script_and_runs_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    done, pidfile = tmp_path / "done", tmp_path / "pid"
    hang = script(tmp_path, "hang.sh", f"echo $$ > '{pidfile}'\nexec sleep 30\n")
    notifier = Notifier(timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        notifier.notify("VI_1", "MASTER", 150, str(hang), "")
        notifier.notify("VI_1", "BACKUP", 100, f"touch '{done}'", "")
        assert wait_until(done.exists)
        notifier.close(timeout=5)
    assert process_gone(int(pidfile.read_text()))
    assert any(
        "timed out after 0.3s" in r.getMessage() and "hang.sh" in r.getMessage() for r in caplog.records
    )


def test_notifier_passes_keepalived_generic_arguments(tmp_path: Path, notifier: Notifier) -> None:
    out = tmp_path / "argv"
    generic = script(tmp_path, "notify.sh", f'printf "%s\\n" "$@" > "{out}.tmp"\nmv "{out}.tmp" "{out}"\n')
    notifier.notify("VI_1", "MASTER", 150, "", str(generic))
    assert wait_until(out.exists)
    assert out.read_text().splitlines() == ["INSTANCE", "VI_1", "MASTER", "150"]


def test_notifier_logs_failures_and_never_raises(
    tmp_path: Path, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        notifier.notify("VI_1", "MASTER", 150, str(tmp_path / "missing.sh"), "")
        notifier.notify("VI_1", "MASTER", 150, "'unbalanced", "")
        notifier.notify("VI_1", "BOGUS", 150, "true", "")
        notifier.notify("VI_1", "FAULT", 150, str(script(tmp_path, "bad.sh", "exit 7\n")), "")
        assert wait_until(lambda: any("exit status 7" in r.getMessage() for r in caplog.records))
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot run" in messages
    assert "quotation" in messages
    assert "BOGUS" in messages


def test_notifier_close_drains_queue_then_refuses(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "log"
    notifier = Notifier(timeout=5)
    notifier.notify("VI_1", "MASTER", 150, marker_script(tmp_path, "m", log, pause=0.1), "")
    notifier.notify("VI_1", "STOP", 150, marker_script(tmp_path, "s", log, pause=0.1), "")
    notifier.close(timeout=5)
    assert log.read_text().splitlines() == ["start m ", "end m", "start s ", "end s"]
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        notifier.notify("VI_1", "MASTER", 150, "true", "")
    assert "notifier closed" in caplog.text


def test_notifier_close_is_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(timeout=60)
    hang = str(script(tmp_path, "hang.sh", "exec sleep 30\n"))
    never = tmp_path / "never"
    with caplog.at_level(logging.WARNING, logger="agenda.vrrp"):
        notifier.notify("VI_1", "MASTER", 150, hang, "")
        notifier.notify("VI_1", "BACKUP", 100, f"touch '{never}'", "")
        started = time.monotonic()
        notifier.close(timeout=0.3)
        assert time.monotonic() - started < 2
    assert not never.exists()
    assert "skipped" in caplog.text


class HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(HealthHandler.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def test_runner_with_an_in_process_get(recorder: Recorder, runners: list[TrackScriptRunner]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/health"
        specs = [
            TrackScriptSpec("gateway", "", 0.02, 1.0, 1, 1, 0, http_get=url),
            TrackScriptSpec("closed", "", 0.02, 1.0, 1, 1, 0, http_get="http://127.0.0.1:9/v1/health"),
        ]
        runner = TrackScriptRunner(specs, recorder)
        runners.append(runner)
        runner.start()
        assert wait_until(lambda: sorted(recorder.snapshot()) == [("closed", False), ("gateway", True)])
        HealthHandler.status = 503  # answers, but not 2xx: failed
        assert wait_until(lambda: ("gateway", False) in recorder.snapshot())
    finally:
        HealthHandler.status = 200
        server.shutdown()
        server.server_close()
