"""How calendar records are shown to one caller: the API's representation, shared by both services."""

from __future__ import annotations

from typing import Any

from agenda.domain.model import Event

__all__ = ["event_view"]


def event_view(event: Event, me: str, conflicts: list[str] | None = None) -> dict[str, Any]:
    """`event` as `me` sees it: the record plus my answer, and the clashing event ids when given."""
    data = event.to_dict()
    # The CalDAV client's own calendar object and resource name are CalDAV's business (`/dav/`).
    data.pop("ical", None)
    data.pop("dav_name", None)
    status = event.partstat(me)
    data["my_status"] = None if status is None else status.value
    if conflicts is not None:
        data["conflicts"] = conflicts
    return data
