"""``/v1/health`` (a leader with a quorum is in sight) and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

import flask

from agenda.common.errors import problem_response, problem_type, unavailable
from agenda.db.api.context import RETRY_AFTER, db_context

__all__ = ["health"]

health = flask.Blueprint("health", __name__)


@health.get("/v1/health")
def member_health() -> Any:
    node = db_context().node
    leader = node.leader()
    body = {
        "id": node.self_peer.node_id,
        "leader": leader.node_id if leader is not None else None,
        "quorum": node.status.has_quorum,
    }
    if node.healthy():
        return flask.jsonify({"status": "ok", **body})
    problem = unavailable(
        RETRY_AFTER, "this member sees no leader with a quorum", type=problem_type("unhealthy"), **body
    )
    return problem_response(problem)


@health.get("/metrics")
def prometheus() -> Any:
    ctx = db_context()
    node, metrics = ctx.node, ctx.metrics
    status = node.status
    keys, leases, revision = node.read(lambda sm: (len(sm), len(sm.leases()), sm.revision))
    labels = f'node="{node.self_peer.node_id}"'
    lines = [
        "# TYPE agenda_db_is_leader gauge",
        f"agenda_db_is_leader{{{labels}}} {int(node.is_leader())}",
        "# TYPE agenda_db_healthy gauge",
        f"agenda_db_healthy{{{labels}}} {int(node.healthy())}",
        "# TYPE agenda_db_raft_term gauge",
        f"agenda_db_raft_term{{{labels}}} {status.term}",
        "# TYPE agenda_db_raft_commit_index gauge",
        f"agenda_db_raft_commit_index{{{labels}}} {status.commit_index}",
        "# TYPE agenda_db_raft_applied_index gauge",
        f"agenda_db_raft_applied_index{{{labels}}} {status.applied_index}",
        "# TYPE agenda_db_reachable_members gauge",
        f"agenda_db_reachable_members{{{labels}}} {len(status.connected) + 1}",
        "# TYPE agenda_db_revision gauge",
        f"agenda_db_revision{{{labels}}} {revision}",
        "# TYPE agenda_db_keys gauge",
        f"agenda_db_keys{{{labels}}} {keys}",
        "# TYPE agenda_db_leases gauge",
        f"agenda_db_leases{{{labels}}} {leases}",
        "# TYPE agenda_db_journal_fsyncs_total counter",
        f"agenda_db_journal_fsyncs_total{{{labels}}} {node.journal_syncs}",
    ]
    for name, value in sorted(node.counters.items()):
        lines.append(f"# TYPE agenda_db_{name}_total counter")
        lines.append(f"agenda_db_{name}_total{{{labels}}} {value}")
    with metrics.lock:
        requests = sorted(metrics.requests.items())
        forwarded, redirected = metrics.forwarded, metrics.redirected
    lines.append("# TYPE agenda_db_forwarded_total counter")
    lines.append(f"agenda_db_forwarded_total{{{labels}}} {forwarded}")
    lines.append("# TYPE agenda_db_redirected_total counter")
    lines.append(f"agenda_db_redirected_total{{{labels}}} {redirected}")
    lines.append("# TYPE agenda_db_http_requests_total counter")
    for (method, rule, code), count in requests:
        route = rule.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(
            f'agenda_db_http_requests_total{{{labels},method="{method}",route="{route}",code="{code}"}} '
            f"{count}"
        )
    return flask.Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")
