"""WebDAV and CalDAV (RFC 4918, 4791, 6578, 6638) as pure protocol pieces, below the services.

`xml` reads request bodies with a hardened parser and writes multistatus answers; `query` evaluates a
calendar-query filter (RFC 4791 section 9.7) against one calendar object and expands recurrences for
``CALDAV:expand``; `paths` names the URL space. The User Service serves them (`agenda.users.dav`): this
package knows nothing of Flask or of the DB.
"""
