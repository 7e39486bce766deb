"""Python client of the DB service, for the other Agenda services.

Give it every member's API base URL: any member can serve any request (followers forward to the
leader), and :class:`~agenda.common.http.HttpClient` fails over to the next member when one is down or
answers 503. Requests are only re-sent when that is harmless: reads, unconditional puts and deletes,
keepalives, and any request the DB answered with "no leader" or "proposal failed" (refused before it
entered the log, so not applied), after the DB's Retry-After: a write sent during an election or a
leadership transfer goes through once the cluster has a leader again. A conditional write
(``prev_revision``), a txn or a lease grant whose outcome is unknown raises :class:`DBUnavailable` with
``outcome_unknown=True`` so the caller can re-read and decide.

Keys are sent in the URL path (``/v1/kv/<key>``) percent-encoded, so any legal key (including ones
starting with ``/`` or containing ``?``) round-trips.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import requests

from agenda.common.http import HttpClient, TimeoutSpec, Unavailable

__all__ = [
    "Compacted",
    "DBClient",
    "DBError",
    "DBUnavailable",
    "LeaseNotFound",
    "RevisionMismatch",
]


class DBError(Exception):
    """The DB answered with an error; ``status`` and the decoded ``problem`` body are attached."""

    def __init__(self, status: int, problem: Mapping[str, Any] | None, message: str | None = None) -> None:
        self.status = status
        self.problem: dict[str, Any] = dict(problem or {})
        detail = message or self.problem.get("detail") or f"HTTP {status}"
        super().__init__(f"{status}: {detail}")


class RevisionMismatch(DBError):  # noqa: N818 - the condition the caller handles
    """A ``prev_revision`` guard failed; ``mod_revision`` is the key's actual mod_revision (0 = absent)."""

    @property
    def mod_revision(self) -> int | None:
        return self.problem.get("mod_revision")


class LeaseNotFound(DBError):  # noqa: N818
    """The lease does not exist (expired, revoked or never granted)."""


class Compacted(DBError):  # noqa: N818
    """The watch history no longer reaches the requested revision: re-read, then watch from now."""

    @property
    def compact_revision(self) -> int | None:
        return self.problem.get("compact_revision")


class DBUnavailable(DBError):  # noqa: N818
    """No member could serve the request; ``outcome_unknown`` when a write may have been applied."""

    def __init__(self, message: str, *, outcome_unknown: bool = False, status: int = 503) -> None:
        super().__init__(status, None, message)
        self.outcome_unknown = outcome_unknown


def _key_path(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    return "/v1/kv/" + quote(key, safe="/")


# Problem types (their last path segment) of DB answers that prove the request was not carried out:
# nothing entered the Raft log, so even a txn or a lease grant may be sent again.
_NOT_CARRIED_OUT: Final = frozenset({"no-leader", "proposal-failed", "membership-change-in-progress"})


def _not_carried_out(response: requests.Response) -> bool:
    kind = str(_problem(response).get("type", ""))
    return kind.rsplit("/", 1)[-1] in _NOT_CARRIED_OUT


def _problem(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class DBClient:
    """Thread-safe client over all DB members."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        timeout: TimeoutSpec = (1.0, 10.0),
        retries: int = 3,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.http = http or HttpClient(base_urls, timeout=timeout, retries=retries, verify=verify, cert=cert)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DBClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        timeout: TimeoutSpec | None = None,
        not_found_ok: bool = False,
    ) -> requests.Response | None:
        try:
            response = self.http.request(
                method,
                path,
                json=json,
                params=params,
                idempotent=idempotent,
                timeout=timeout,
                resend_if=_not_carried_out,
            )
        except Unavailable as exc:
            unknown = not (idempotent if idempotent is not None else method in ("GET", "PUT", "DELETE"))
            raise DBUnavailable(str(exc), outcome_unknown=unknown and method != "GET") from exc
        status = response.status_code
        if status < 400:
            return response
        problem = _problem(response)
        if status == 404 and not_found_ok and "lease-not-found" not in str(problem.get("type", "")):
            return None
        if status == 409 and "revision-mismatch" in str(problem.get("type", "")):
            raise RevisionMismatch(status, problem)
        if "lease-not-found" in str(problem.get("type", "")):
            raise LeaseNotFound(status, problem)
        if status == 410:
            raise Compacted(status, problem)
        if status in (502, 503, 504):
            outcome = problem.get("outcome") == "unknown"
            raise DBUnavailable(
                str(problem.get("detail", f"HTTP {status}")), outcome_unknown=outcome, status=status
            )
        raise DBError(status, problem)

    @staticmethod
    def _consistency(linearizable: bool) -> dict[str, str]:
        return {} if linearizable else {"consistency": "stale"}

    # ------------------------------------------------------------------------------------------ KV

    def get(self, key: str, *, linearizable: bool = True) -> dict[str, Any] | None:
        """The kv dict (key, value, create_revision, mod_revision, version, lease) or None if absent."""
        response = self._call(
            "GET", _key_path(key), params=self._consistency(linearizable), not_found_ok=True
        )
        return None if response is None else response.json()

    def range(
        self,
        prefix: str = "",
        *,
        start: str | None = None,
        limit: int | None = None,
        linearizable: bool = True,
    ) -> dict[str, Any]:
        """One page: ``{items, revision, more}``; next page with ``start=items[-1]["key"] + "\\0"``."""
        params: dict[str, Any] = {"prefix": prefix, **self._consistency(linearizable)}
        if start is not None:
            params["start"] = start
        if limit is not None:
            params["limit"] = limit
        response = self._call("GET", "/v1/kv", params=params)
        assert response is not None  # noqa: S101 - only 404 may yield None
        return response.json()

    def iter_prefix(
        self, prefix: str, *, page: int = 500, linearizable: bool = True
    ) -> Iterator[dict[str, Any]]:
        """Every kv under ``prefix``, page by page (each page is a separate, consistent read)."""
        start: str | None = None
        while True:
            result = self.range(prefix, start=start, limit=page, linearizable=linearizable)
            yield from result["items"]
            if not result["more"] or not result["items"]:
                return
            start = result["items"][-1]["key"] + "\0"

    def put(self, key: str, value: Any, *, lease: int = 0, prev_revision: int | None = None) -> int:
        """Write ``key``; returns the new revision. ``prev_revision``: 0 = create only, N = CAS."""
        body: dict[str, Any] = {"value": value}
        if lease:
            body["lease"] = lease
        if prev_revision is not None:
            body["prev_revision"] = prev_revision
        response = self._call("PUT", _key_path(key), json=body, idempotent=prev_revision is None)
        assert response is not None  # noqa: S101
        return int(response.json()["revision"])

    def delete(self, key: str, *, prev_revision: int | None = None) -> int | None:
        """Delete ``key``; returns the revision, or None when it did not exist."""
        params = {} if prev_revision is None else {"prev_revision": prev_revision}
        response = self._call(
            "DELETE", _key_path(key), params=params, idempotent=prev_revision is None, not_found_ok=True
        )
        return None if response is None else int(response.json()["revision"])

    def txn(
        self,
        compare: Sequence[Mapping[str, Any]] = (),
        success: Sequence[Mapping[str, Any]] = (),
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """``{succeeded, results, revision}``; build items with the ``agenda.db.txn.txn_*`` helpers."""
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        response = self._call("POST", "/v1/txn", json=body)
        assert response is not None  # noqa: S101
        return response.json()

    # -------------------------------------------------------------------------------------- leases

    def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        response = self._call("POST", "/v1/leases", json={"ttl": ttl})
        assert response is not None  # noqa: S101
        return int(response.json()["id"])

    def keepalive(self, lease_id: int) -> dict[str, Any]:
        """Extend the lease to now + ttl; raises LeaseNotFound once it is gone."""
        response = self._call("POST", f"/v1/leases/{int(lease_id)}/keepalive", idempotent=True)
        assert response is not None  # noqa: S101
        return response.json()

    def revoke(self, lease_id: int) -> None:
        """Revoke the lease and delete its keys (LeaseNotFound if already gone)."""
        self._call("DELETE", f"/v1/leases/{int(lease_id)}")

    # --------------------------------------------------------------------------------------- watch

    def watch(self, prefix: str, since: int, *, timeout: float = 25.0) -> dict[str, Any]:
        """Long poll: ``{events, revision}`` with events after ``since``; continue from ``revision``."""
        params = {"prefix": prefix, "since": since, "timeout": timeout}
        read_timeout = timeout + 10.0
        response = self._call("GET", "/v1/watch", params=params, timeout=(2.0, read_timeout))
        assert response is not None  # noqa: S101
        return response.json()

    # ------------------------------------------------------------------------------------- cluster

    def cluster(self) -> dict[str, Any]:
        response = self._call("GET", "/v1/cluster")
        assert response is not None  # noqa: S101
        return response.json()

    def add_member(self, node_id: str, raft: str, api: str) -> list[dict[str, Any]]:
        """Add a running member (see ``agenda.db.node``, "Procedure"); returns the new member list.

        Never re-sent blindly: when the outcome is unknown, the current membership decides - the member is
        listed (success) or :class:`DBUnavailable` with ``outcome_unknown`` is raised (the change may still
        be pending: check ``cluster()`` again later).
        """
        body = {"id": node_id, "raft": raft, "api": api}
        try:
            response = self._call("POST", "/v1/cluster/members", json=body, idempotent=False)
        except DBUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            members = self._members_or_raise(exc)
            if {"id": node_id, "raft": raft, "api": api} in [_address_book(m) for m in members]:
                return members
            raise
        assert response is not None  # noqa: S101
        return list(response.json()["members"])

    def remove_member(self, node_id: str) -> list[dict[str, Any]]:
        """Remove a member (then stop it); returns the new member list. An unknown id raises DBError 404.

        Like :meth:`add_member`, an unknown outcome is settled by reading the membership, not by resending.
        """
        path = "/v1/cluster/members/" + quote(node_id, safe="")
        try:
            response = self._call("DELETE", path, idempotent=False)
        except DBUnavailable as exc:
            if not exc.outcome_unknown:
                raise
            members = self._members_or_raise(exc)
            if all(member["id"] != node_id for member in members):
                return members
            raise
        assert response is not None  # noqa: S101
        return list(response.json()["members"])

    def _members_or_raise(self, unknown: DBUnavailable) -> list[dict[str, Any]]:
        """The current member list, or ``unknown`` re-raised when even that cannot be read."""
        try:
            return list(self.cluster()["members"])
        except DBError:
            raise unknown from None


def _address_book(member: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": member.get("id"), "raft": member.get("raft"), "api": member.get("api")}
