"""An agent's UDP and TCP sockets share one port (memberlist's one address per member)."""

from __future__ import annotations

import errno

import pytest

from agenda.gossip.agent import _bind_pair


def test_port_zero_gives_one_port_for_both_and_a_taken_fixed_port_is_refused() -> None:
    udp, tcp = _bind_pair("127.0.0.1", 0)
    try:
        port = udp.getsockname()[1]
        assert tcp.getsockname()[1] == port
        with pytest.raises(OSError, match="in use") as info:
            _bind_pair("127.0.0.1", port)  # a configured port is never changed: refused
        assert info.value.errno == errno.EADDRINUSE
    finally:
        udp.close()
        tcp.close()
