"""bench/caldav.py's pure parts: the conformance comparison and its requirement, the request bodies."""

from __future__ import annotations

import icalendar
from bench.caldav import BASE, QUERY_DAY, _result, compare, event_body, query_body


def test_the_requirement_ignores_to_dos_and_journals_and_needs_scheduling() -> None:
    radicale = {
        "save-load.event": {"support": "full"},
        "save-load.todo": {"support": "full"},
        "search.time-range.open.end": {"support": "full"},
        "scheduling": {"support": "unsupported"},
        "principal-search": {"support": "unsupported"},
    }
    agenda = {
        "save-load.event": {"support": "full"},
        "save-load.todo": {"support": "ungraceful"},
        "search.time-range.open.end": {"support": "unknown"},
        "scheduling": {"support": "full"},
        "principal-search": {"support": "full"},
    }
    table, differences, failures = compare(agenda, radicale)
    assert failures == []
    assert len(differences) == 4
    assert "scheduling" in table
    assert "<>" in table

    agenda["save-load.event"] = {"support": "broken"}
    agenda["scheduling"] = {"support": "unsupported"}
    _, _, failures = compare(agenda, radicale)
    assert failures == [
        "save-load.event: radicale full, agenda broken",
        "scheduling: agenda unsupported, required full",
    ]


def test_a_feature_only_one_side_reports_shows_as_missing() -> None:
    table, differences, _ = compare({"a": {"value": True}}, {"b": {"support": "full"}})
    assert differences == ["a: radicale -, agenda value=True", "b: radicale full, agenda -"]
    assert table.count("<>") == 2


def test_the_bodies_are_what_the_servers_parse() -> None:
    event = icalendar.Calendar.from_ical(event_body("u@b", BASE, "One")).walk("VEVENT")[0]
    assert event["DTSTART"].dt == BASE
    assert str(event["UID"]) == "u@b"
    query = query_body().decode()
    assert f'start="{QUERY_DAY:%Y%m%dT%H%M%SZ}"' in query


def test_a_put_step_counts_only_stored_events() -> None:
    result = _result(4, 2.0, [0.010, 0.020, 0.030, 0.040], {201: 4, 409: 1}, {"ConnectionError": 1})
    assert (result.ok, result.errors, result.rps) == (4, 2, 2.0)
    assert result.p50_ms == 30.0
    assert result.p99_ms == 40.0
