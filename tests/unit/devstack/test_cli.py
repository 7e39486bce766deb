"""agenda-dev's command line: flags, one-line errors (exit 2) and what it prints once ready."""

import re
from pathlib import Path

import pytest

from agenda.devstack import DevStack
from agenda.devstack.cli import build_parser, main, ready_message


def test_defaults_are_tls_on_port_8443_with_data_kept_in_cache_dev() -> None:
    args = build_parser().parse_args([])
    assert (args.dir, args.port, args.no_tls, args.fresh) == (Path(".cache/dev"), 8443, False, False)
    args = build_parser().parse_args(["--dir", "elsewhere", "--port", "0", "--no-tls", "--fresh"])
    assert (args.dir, args.port, args.no_tls, args.fresh) == (Path("elsewhere"), 0, True, True)


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--port", "99999"], "port 99999 is outside 0-65535"),
        (["--port", "https"], "not a port number: 'https'"),
        (["--tls"], "unrecognized arguments: --tls"),
    ],
)
def test_bad_flags_are_one_line_and_exit_status_2(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert problem in err


def test_a_port_in_use_is_one_line_and_exit_status_2(
    tmp_path: Path, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dir", str(tmp_path), "--port", str(listening)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        err == f"agenda-dev: cannot listen on 127.0.0.1:{listening} for the gateway: Address already in use\n"
    )


@pytest.mark.parametrize("tls", [True, False])
def test_the_ready_message_says_where_the_gateway_is_and_how_to_try_it(tmp_path: Path, tls: bool) -> None:
    stack = DevStack(tmp_path, tls=tls)
    try:
        text = ready_message(stack, 3.25)
    finally:
        stack.stop()
    lines = text.splitlines()
    assert lines[0] == f"Agenda dev stack ready in 3.2 s ({'TLS' if tls else 'plain HTTP, no TLS'})."
    assert f"  gateway   {stack.gateway_url}" in lines
    assert (f"  CA file   {stack.ca_file}" in lines) == tls
    assert all(f"  {name:<9} {stack.url(name)}" in lines for name in stack.names)
    curls = [line for line in lines if "curl " in line]
    assert [re.findall(r"https?://[0-9.:]+/v1/[a-z/]+", curl) for curl in curls] == [
        [f"{stack.gateway_url}/v1/{path}"] for path in ("health", "auth/register", "auth/login", "me")
    ]
    assert all((f"curl --cacert {stack.ca_file} " in curl) == tls for curl in curls)
    assert '-H "Authorization: Bearer $TOKEN"' in curls[-1]
    assert lines[-1] == "Ctrl-C to stop."
