"""The supervisor's only contact with Redis: ROLE to observe, REPLICAOF to act, all bounded in time.

A server that hangs, refuses, or answers something that is not a ROLE reply counts as unreachable
for the round (with the reason counted), never as a blocked supervisor: every command runs with
``timeout_ms`` as its socket timeout, and the servers are asked in parallel.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agenda.common.config import Config
from agenda.redis_supervisor.config import server_name
from agenda.redis_supervisor.decide import ServerView

log = logging.getLogger("agenda.redis_supervisor")


class Garbage(Exception):  # noqa: N818 - reads as what the server answered
    """The server answered, but not with a ROLE reply we understand."""


def parse_role(reply: Any) -> tuple[str, str | None, bool, int]:
    """``(role, master "host:port" or None, link up, offset)`` from a ROLE reply; Garbage otherwise.

    master: ``["master", offset, [[host, port, offset], ...]]``; replica: ``["slave", host, port,
    state, offset]`` (state "connected" when the link is up).
    """
    if not isinstance(reply, list | tuple) or not reply:
        raise Garbage(f"not a ROLE reply: {reply!r:.80}")
    kind = reply[0]
    try:
        if kind == "master" and len(reply) >= 2:
            return "master", None, False, int(reply[1])
        if kind == "slave" and len(reply) >= 5:
            host, port, state, offset = reply[1], int(reply[2]), reply[3], int(reply[4])
            if not isinstance(host, str) or not isinstance(state, str):
                raise Garbage(f"not a ROLE reply: {reply!r:.80}")
            return "slave", server_name(host, port), state == "connected", max(int(offset), 0)
    except (TypeError, ValueError) as exc:
        raise Garbage(f"not a ROLE reply: {reply!r:.80}") from exc
    raise Garbage(f"not a ROLE reply: {reply!r:.80}")


class RedisFleet:
    """A client per configured server, observed in parallel and acted on one command at a time."""

    def __init__(self, cfg: Config) -> None:
        self.servers = [(server_name(s.host, s.port), s.host, s.port, s.priority) for s in cfg.servers]
        timeout = cfg.timeout_ms / 1000
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "decode_responses": True,
            "retry_on_timeout": False,
            # redis-py retries a failed command three times with backoff by default: seconds lost on a
            # dead server, every round. One attempt per round; the next round is the retry.
            "retry": Retry(NoBackoff(), 0),
        }
        if cfg.redis_username:
            options["username"] = cfg.redis_username
        if cfg.redis_password:
            options["password"] = cfg.redis_password
        if cfg.redis_tls.enabled:
            options.update(
                ssl=True,
                ssl_ca_certs=cfg.redis_tls.ca,
                ssl_certfile=cfg.redis_tls.cert,
                ssl_keyfile=cfg.redis_tls.key,
            )
        self.clients = {
            name: redis.Redis(host=host, port=port, **options) for name, host, port, _ in self.servers
        }
        self.failures: collections.Counter[tuple[str, str]] = collections.Counter()  # (server, reason)
        self._failures_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self.servers)), thread_name_prefix="redis-observe"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients.values():
            client.close()

    def _count(self, name: str, reason: str) -> None:
        with self._failures_lock:
            self.failures[(name, reason)] += 1

    def _observe_one(self, name: str, host: str, port: int, priority: int) -> ServerView:
        try:
            role, master, link_up, offset = parse_role(self.clients[name].execute_command("ROLE"))
        except redis.exceptions.TimeoutError:
            self._count(name, "timeout")
        except redis.exceptions.AuthenticationError:
            self._count(name, "auth")
        except (redis.exceptions.ConnectionError, OSError):
            self._count(name, "connection")
        except Garbage:
            self._count(name, "garbage")
        except redis.exceptions.RedisError:
            self._count(name, "error")
        else:
            return ServerView(name, host, port, True, role, master, link_up, offset, priority)  # type: ignore[arg-type]
        return ServerView(name, host, port, False, priority=priority)

    def observe(self) -> list[ServerView]:
        futures = [self._pool.submit(self._observe_one, *server) for server in self.servers]
        return [future.result() for future in futures]

    def promote(self, name: str) -> None:
        self._replicaof(name, "NO", "ONE")

    def follow(self, name: str, host: str, port: int) -> None:
        self._replicaof(name, host, str(port))

    def _replicaof(self, name: str, *args: str) -> None:
        client = self.clients[name]
        client.execute_command("REPLICAOF", *args)
        # So that a restarted server comes back in the role it was given, not its file's original one.
        try:
            client.execute_command("CONFIG", "REWRITE")
        except redis.exceptions.RedisError as exc:
            self._count(name, "config_rewrite")
            log.warning("redis-supervisor: %s: CONFIG REWRITE failed: %s", name, exc)

    def names(self) -> Sequence[str]:
        return [name for name, *_ in self.servers]
