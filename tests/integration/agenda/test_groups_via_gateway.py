"""The Group Service behind the gateway: hierarchy rules, fan-out of group events, the privacy mask
of the group agenda, and common free slots, on the real DB cluster.
"""

from __future__ import annotations

from typing import Any

import requests

from .conftest import Stack

PROBLEM = "application/problem+json"


def at(day: int, hour: int, minute: int = 0) -> str:
    return f"2032-05-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def ok(response: requests.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def problem(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    return response.json()


def join(
    stack: Stack, group_id: str, inviter_token: str, user: str, user_token: str, level: int | None
) -> None:
    body: dict[str, Any] = {"username": user}
    if level is not None:
        body["level"] = level
    ok(stack.call("POST", f"/v1/groups/{group_id}/members", inviter_token, json=body), 201)
    ok(stack.call("POST", f"/v1/groups/{group_id}/membership", user_token, json={"accept": True}))


def test_hierarchical_group_rules_and_fan_out(stack: Stack) -> None:
    alice, a_tok = stack.user("ha")
    bob, b_tok = stack.user("hb")
    carol, c_tok = stack.user("hc")
    outsider, o_tok = stack.user("ho")
    group = ok(stack.call("POST", "/v1/groups", a_tok, json={"name": "Dept", "hierarchical": True}), 201)
    gid = group["id"]
    assert group["members"][alice]["level"] == 0
    join(stack, gid, a_tok, bob, b_tok, 1)
    join(stack, gid, b_tok, carol, c_tok, 2)

    # Nobody creates a peer or a superior; juniors cannot remove seniors; outsiders see nothing.
    problem(
        stack.call("POST", f"/v1/groups/{gid}/members", b_tok, json={"username": outsider, "level": 1}), 403
    )
    problem(stack.call("POST", f"/v1/groups/{gid}/members", a_tok, json={"username": outsider}), 400)
    problem(stack.call("DELETE", f"/v1/groups/{gid}/members/{bob}", c_tok), 403)
    problem(stack.call("DELETE", f"/v1/groups/{gid}/members/{alice}", b_tok), 403)
    problem(stack.call("GET", f"/v1/groups/{gid}", o_tok), 404)
    problem(stack.call("POST", f"/v1/groups/{gid}/membership", b_tok, json={"accept": False}), 409)
    assert [g["group_id"] for g in ok(stack.call("GET", "/v1/groups", c_tok))["groups"]] == [gid]

    # Bob's group event: Carol (junior) is committed at once, Alice (senior) is only invited.
    event = ok(
        stack.call(
            "POST",
            f"/v1/groups/{gid}/events",
            b_tok,
            json={"title": "Sync", "start": at(3, 9), "end": at(3, 10)},
        ),
        201,
    )
    assert event["status"] == "confirmed"
    assert event["participants"] == {
        alice: {"status": "needs-action", "level": 0},
        carol: {"status": "accepted", "level": 2},
    }
    carol_day = ok(stack.call("GET", "/v1/events", c_tok, params={"from": at(3, 0), "to": at(4, 0)}))
    assert [(e["id"], e["my_status"]) for e in carol_day["events"]] == [(event["id"], "accepted")]
    assert [i["id"] for i in ok(stack.call("GET", "/v1/invitations", a_tok))["invitations"]] == [event["id"]]
    # Alice declining does not cancel a hierarchical event.
    declined = ok(stack.call("POST", f"/v1/events/{event['id']}/respond", a_tok, json={"status": "declined"}))
    assert declined["status"] == "confirmed"

    # Privacy: Carol's private event shows fully to seniors, Alice's private one only as busy to juniors.
    ok(
        stack.call(
            "POST", "/v1/events", c_tok, json={"title": "Dentist", "start": at(3, 14), "end": at(3, 15)}
        ),
        201,
    )
    ok(
        stack.call(
            "POST", "/v1/events", a_tok, json={"title": "Board", "start": at(3, 16), "end": at(3, 17)}
        ),
        201,
    )
    window = {"from": at(3, 0), "to": at(4, 0)}
    seen_by_bob = ok(stack.call("GET", f"/v1/groups/{gid}/agenda", b_tok, params=window))["members"]
    assert [b.get("title") for b in seen_by_bob[carol]] == ["Sync", "Dentist"]
    assert seen_by_bob[alice] == [{"start": at(3, 16), "end": at(3, 17), "busy": True}]
    seen_by_alice = ok(stack.call("GET", f"/v1/groups/{gid}/agenda", a_tok, params=window))["members"]
    assert [b.get("title") for b in seen_by_alice[carol]] == ["Sync", "Dentist"]

    # Free slots common to everyone between 08:00 and 18:00, at least an hour long.
    free = ok(
        stack.call(
            "GET",
            f"/v1/groups/{gid}/free",
            c_tok,
            params={"from": at(3, 8), "to": at(3, 18), "duration": "60"},
        )
    )
    assert free["slots"] == [
        {"start": at(3, 8), "end": at(3, 9)},
        {"start": at(3, 10), "end": at(3, 14)},
        {"start": at(3, 15), "end": at(3, 16)},
        {"start": at(3, 17), "end": at(3, 18)},
    ]
    problem(stack.call("GET", f"/v1/groups/{gid}/free", c_tok, params={**window, "duration": "0"}), 400)
    problem(stack.call("GET", f"/v1/groups/{gid}/free", c_tok, params={**window, "duration": "x"}), 400)

    # Bob removes Carol (his junior); the owner cannot leave while others remain.
    assert stack.call("DELETE", f"/v1/groups/{gid}/members/{carol}", b_tok).status_code == 204
    problem(stack.call("GET", f"/v1/groups/{gid}", c_tok), 404)
    problem(stack.call("DELETE", f"/v1/groups/{gid}/members/{alice}", a_tok), 409)


def test_flat_group_event_needs_everyone_and_one_decline_cancels(stack: Stack) -> None:
    _, o_tok = stack.user("fo")
    ann, ann_tok = stack.user("fa")
    ben, ben_tok = stack.user("fb")
    gid = ok(stack.call("POST", "/v1/groups", o_tok, json={"name": "Club"}), 201)["id"]
    join(stack, gid, o_tok, ann, ann_tok, None)
    problem(
        stack.call("POST", f"/v1/groups/{gid}/members", ann_tok, json={"username": ben}), 403
    )  # owner only
    join(stack, gid, o_tok, ben, ben_tok, None)

    body = {"title": "Dinner", "start": at(10, 19), "end": at(10, 21), "visibility": "public"}
    first = ok(stack.call("POST", f"/v1/groups/{gid}/events", ann_tok, json=body), 201)
    assert first["status"] == "tentative"
    ok(stack.call("POST", f"/v1/events/{first['id']}/respond", o_tok, json={"status": "accepted"}))
    done = ok(stack.call("POST", f"/v1/events/{first['id']}/respond", ben_tok, json={"status": "accepted"}))
    assert done["status"] == "confirmed"

    second = ok(
        stack.call(
            "POST", f"/v1/groups/{gid}/events", ann_tok, json={**body, "start": at(11, 19), "end": at(11, 21)}
        ),
        201,
    )
    ok(stack.call("POST", f"/v1/events/{second['id']}/respond", o_tok, json={"status": "accepted"}))
    cancelled = ok(
        stack.call("POST", f"/v1/events/{second['id']}/respond", ben_tok, json={"status": "declined"})
    )
    assert cancelled["status"] == "cancelled"
    problem(
        stack.call("POST", f"/v1/events/{second['id']}/respond", ben_tok, json={"status": "accepted"}), 409
    )
    kinds = [n["kind"] for n in ok(stack.call("GET", "/v1/notifications", o_tok))["notifications"]]
    assert "confirmed" in kinds
    assert "cancelled" in kinds

    # Flat groups have no ranks: a member's private event is only "busy" to the others.
    ok(
        stack.call(
            "POST", "/v1/events", ben_tok, json={"title": "Secret", "start": at(10, 8), "end": at(10, 9)}
        ),
        201,
    )
    seen = ok(
        stack.call("GET", f"/v1/groups/{gid}/agenda", ann_tok, params={"from": at(10, 0), "to": at(11, 0)})
    )
    blocks = seen["members"][ben]
    assert blocks[0] == {"start": at(10, 8), "end": at(10, 9), "busy": True}
    assert (blocks[1]["title"], blocks[1]["id"]) == ("Dinner", first["id"])  # public: shown in full


def test_group_input_is_validated(stack: Stack) -> None:
    me, tok = stack.user("gv")
    problem(stack.call("POST", "/v1/groups", tok, json={"name": ""}), 400)
    problem(stack.call("POST", "/v1/groups", tok, json={"name": "x", "hierarchical": "yes"}), 400)
    problem(stack.call("POST", "/v1/groups", tok, json={"name": "x", "extra": 1}), 400)
    problem(stack.call("GET", "/v1/groups/not-an-id", tok), 404)
    gid = ok(stack.call("POST", "/v1/groups", tok, json={"name": "H", "hierarchical": True}), 201)["id"]
    other, _ = stack.user("gw")
    problem(
        stack.call("POST", f"/v1/groups/{gid}/members", tok, json={"username": other}), 400
    )  # level missing
    problem(stack.call("POST", f"/v1/groups/{gid}/members", tok, json={"username": other, "level": -1}), 400)
    problem(stack.call("POST", f"/v1/groups/{gid}/members", tok, json={"username": "no-such-user-9"}), 400)
    # The owner alone may leave, which dissolves the group.
    assert stack.call("DELETE", f"/v1/groups/{gid}/members/{me}", tok).status_code == 204
    problem(stack.call("GET", f"/v1/groups/{gid}", tok), 404)


def test_an_invitation_can_be_declined_and_nobody_joins_without_answering(stack: Stack) -> None:
    _owner, o_tok = stack.user("io")
    guest, g_tok = stack.user("ig")
    gid = ok(stack.call("POST", "/v1/groups", o_tok, json={"name": "Club", "hierarchical": True}), 201)["id"]
    ok(stack.call("POST", f"/v1/groups/{gid}/members", o_tok, json={"username": guest, "level": 1}), 201)

    # Invited is not a member: the group agenda stays closed until the guest answers.
    window = {"from": at(20, 0), "to": at(21, 0)}
    problem(stack.call("GET", f"/v1/groups/{gid}/agenda", g_tok, params=window), 403)
    problem(stack.call("POST", f"/v1/groups/{gid}/membership", g_tok, json={"accept": "yes"}), 400)
    problem(stack.call("POST", f"/v1/groups/{gid}/membership", g_tok, json={}), 400)

    response = stack.call("POST", f"/v1/groups/{gid}/membership", g_tok, json={"accept": False})
    assert response.status_code == 204, response.text
    problem(stack.call("GET", f"/v1/groups/{gid}", g_tok), 404)
    assert guest not in ok(stack.call("GET", f"/v1/groups/{gid}", o_tok))["members"]
    notes = ok(stack.call("GET", "/v1/notifications", o_tok))["notifications"]
    assert any(n["kind"] == "membership" and "declined" in n.get("detail", "") for n in notes), notes
    # Once declined there is nothing left to accept.
    problem(stack.call("POST", f"/v1/groups/{gid}/membership", g_tok, json={"accept": True}), 404)
