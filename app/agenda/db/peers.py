"""Cluster members as the configuration names them: ``ID=RAFTHOST:PORT,APIHOST:PORT``.

Pure parsing, shared by the command line (``--peer``) and the node; importing it loads neither Raft nor
Flask, so ``agenda-db --help`` and configuration errors stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agenda.db import commands
from agenda.db.errors import InvalidArgument

__all__ = ["Peer", "parse_peer", "validate_node_id"]


@dataclass(frozen=True, slots=True)
class Peer:
    """A cluster member: its id, its Raft address (pysyncobj's identity) and its HTTP API address."""

    node_id: str
    raft_addr: str
    api_addr: str


def validate_node_id(value: str) -> str:
    """Node ids are short tokens (they appear in URLs, metrics labels and logs); ValueError otherwise."""
    try:
        return commands.validate_node_id(value)
    except InvalidArgument as exc:
        # The configuration names the key itself; the reason reads "node id must match ..."
        raise ValueError(f"node id {exc.reason}") from None


def parse_peer(text: str, *, check_hostport: Callable[[str], object] | None = None) -> Peer:
    """Parse ``ID=RAFTHOST:PORT,APIHOST:PORT`` into a :class:`Peer`; ValueError naming the problem."""
    node_id, sep, rest = text.strip().partition("=")
    if not sep:
        raise ValueError(f"expected ID=RAFTHOST:PORT,APIHOST:PORT, got {text!r}")
    raft_addr, sep, api_addr = rest.partition(",")
    if not sep or "," in api_addr:
        raise ValueError(f"expected ID=RAFTHOST:PORT,APIHOST:PORT, got {text!r}")
    validate_node_id(node_id.strip())
    raft_addr, api_addr = raft_addr.strip(), api_addr.strip()
    if check_hostport is not None:
        check_hostport(raft_addr)
        check_hostport(api_addr)
    return Peer(node_id.strip(), raft_addr, api_addr)
