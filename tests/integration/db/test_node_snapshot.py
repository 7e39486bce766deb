"""In-process single-member Node: log compaction writes our dump, and a restart restores from it."""

from __future__ import annotations

import os
import socket
import time

import pytest

from agenda.db.dump import decode_dump
from agenda.db.errors import NodeError
from agenda.db.node import DUMP_FILE, Node
from agenda.db.peers import Peer
from agenda.db.state import KVStateMachine
from agenda.db.txn import lease_grant_command, put_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(data_dir, port: int) -> Node:
    node = Node(Peer("solo", f"127.0.0.1:{port}", "127.0.0.1:1"), [], data_dir, cluster_secret="s")
    node.start()
    return node


def test_compaction_dump_and_restart(tmp_path, wait):
    port = free_port()
    node = start_node(tmp_path, port)
    try:
        wait(node.is_leader, 15, message="the single member to elect itself")
        for i in range(20):
            assert node.propose(put_command(f"/k/{i}", i))["ok"]
        node.propose(lease_grant_command(77, 3600, time.time()))
        node.propose(put_command("/leased", "x", lease=77))
        node.read_barrier()
        expected = node.read(lambda sm: sm.snapshot())
        node._raft.forceLogCompaction()
        dump = tmp_path / DUMP_FILE
        wait(dump.exists, 15, message="the dump file")
        meta, snapshot = decode_dump(dump.read_bytes())
        assert KVStateMachine.from_snapshot(snapshot).get("/k/19")["value"] == 19
        assert meta[2] == {f"127.0.0.1:{port}"}
        # Writes after the compaction live only in the journal.
        assert node.propose(put_command("/after", True))["ok"]
        expected_after = node.read(lambda sm: sm.snapshot())
        assert expected_after != expected
    finally:
        node.stop()

    restarted = start_node(tmp_path, port)
    try:
        wait(restarted.is_leader, 15, message="the restarted member to lead")
        restarted.read_barrier()
        assert restarted.read(lambda sm: sm.snapshot()) == expected_after
        assert restarted.read(lambda sm: sm.lease(77))["keys"] == ["/leased"]
    finally:
        restarted.stop()


def test_second_process_on_same_data_dir_is_refused(tmp_path):
    node = start_node(tmp_path, free_port())
    try:
        with pytest.raises(RuntimeError, match="in use"):
            start_node(tmp_path, free_port())
    finally:
        node.stop()
    assert os.path.exists(tmp_path / "LOCK")


def test_proposal_on_a_follower_is_refused(tmp_path):
    # Two configured members, only one running: it can never win an election, so it is no leader.
    port = free_port()
    node = Node(
        Peer("a", f"127.0.0.1:{port}", "127.0.0.1:1"),
        [Peer("b", f"127.0.0.1:{free_port()}", "127.0.0.1:2")],
        tmp_path,
    )
    node.start()
    try:
        assert not node.healthy()
        with pytest.raises(NodeError, match="leader"):
            node.propose(put_command("/x", 1))
    finally:
        node.stop()
