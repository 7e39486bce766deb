"""The calendar's pure rules, shared by the User Service and the Group Service.

Both services are stateless and may run in several copies at once, so every rule that decides who may
do what, when events clash, who sees what and how an RSVP changes an event lives here, once, as plain
functions over plain data: no I/O, no Flask, no clock reads (callers pass `now`). That keeps the rules
identical in every copy of every service, deterministic under retries, and testable in milliseconds.

Modules: `model` (dataclasses and their JSON form), `validation` (API input parsing that names the
offending field), `recurrence` (RRULE/RDATE/EXDATE and overridden occurrences, expanded in the series'
time zone within bounds), `rules` (conflicts, hierarchy, group fan-out, RSVP, privacy, free slots) and
`ical` (a hand-written RFC 5545 exporter).
"""
