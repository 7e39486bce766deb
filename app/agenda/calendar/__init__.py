"""The calendar's data in the DB Service, shared by the User Service and the Group Service.

`layout` names every key (and documents what each holds), `store` reads and writes accounts, events and
notifications (`EventStore`, `Change`), `cas` is the compare-and-swap retry both stores commit through
(it also writes each change's notifications and, once committed, hands them to the store's `announce`),
and `views` is how an event is shown to one caller. Neither service owns this package, so neither has to
import the other's internals to share the calendar.

Importing `agenda.calendar` itself loads nothing else: the API gateway reads `MAX_INVITEES` (for its
OpenAPI document) without loading a store or a DB client.
"""

from typing import Final

__all__ = ["MAX_INVITEES"]

# A transaction holds at most 128 operations and a change of an event writes up to four per involved
# user (two index entries, a notification, a booking guard), so an appointment, or a group event,
# involves at most this many people besides the organizer.
MAX_INVITEES: Final = 25
