"""WebDAV XML: a hardened reader for request bodies and a writer for multistatus answers.

Request bodies come from the network, so they are read by defusedxml, which refuses DTDs outright: no
entity expansion (billion laughs), no external entities (XXE), no network access. Their size is checked
before parsing. Everything else here is plain ElementTree with Clark names (``{DAV:}href``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import defusedxml
import defusedxml.ElementTree as SafeET

__all__ = [
    "CALDAV",
    "CS",
    "DAV",
    "ICAL",
    "MAX_XML_BYTES",
    "DavError",
    "PropStat",
    "clark",
    "element",
    "error_body",
    "multistatus",
    "parse_body",
    "serialise",
    "status_line",
]

DAV: Final = "DAV:"
CALDAV: Final = "urn:ietf:params:xml:ns:caldav"
CS: Final = "http://calendarserver.org/ns/"
ICAL: Final = "http://apple.com/ns/ical/"
AGENDA: Final = "https://agenda.invalid/ns/"
_PREFIXES: Final = {DAV: "D", CALDAV: "C", CS: "CS", ICAL: "ICAL", AGENDA: "A"}
for _uri, _prefix in _PREFIXES.items():
    ET.register_namespace(_prefix, _uri)

# A PROPFIND, REPORT or PROPPATCH body is a few hundred bytes; a multiget of a thousand hrefs ~100 KiB.
MAX_XML_BYTES: Final = 1024 * 1024
_REASONS: Final = {
    200: "OK",
    201: "Created",
    204: "No Content",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
    424: "Failed Dependency",
    507: "Insufficient Storage",
}


def clark(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


class DavError(Exception):
    """An error answered as WebDAV does: `status`, a readable `message`, and, for the preconditions
    RFC 4918/4791/6578 name (``no-uid-conflict``, ``valid-sync-token``...), the condition's element,
    which clients read to decide what to do."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        condition: str | None = None,
        namespace: str = CALDAV,
        hrefs: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.condition = condition
        self.namespace = namespace
        self.hrefs = tuple(hrefs)


def parse_body(data: bytes, *, what: str = "body") -> ET.Element | None:
    """The request's XML document, or None for an empty body; DavError 400/413 otherwise."""
    if not data.strip():
        return None
    if len(data) > MAX_XML_BYTES:
        raise DavError(413, f"the XML {what} must be at most {MAX_XML_BYTES} bytes")
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise DavError(400, f"the XML {what} must not use a DTD or entities ({type(exc).__name__})") from None
    except ET.ParseError as exc:
        raise DavError(400, f"the XML {what} is not well-formed: {exc}") from None


def element(tag: str, text: str | None = None, children: Iterable[ET.Element] = ()) -> ET.Element:
    node = ET.Element(tag)
    if text is not None:
        node.text = text
    node.extend(children)
    return node


def status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"


@dataclass
class PropStat:
    """One ``DAV:response`` for `href`: properties grouped by status, or a bare `status`."""

    href: str
    found: list[ET.Element] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # requested property names (Clark) not defined here
    status: int | None = None  # a response without properties (404 in a multiget, a sync removal)

    def to_xml(self) -> ET.Element:
        response = element(clark(DAV, "response"), children=[element(clark(DAV, "href"), self.href)])
        if self.status is not None:
            response.append(element(clark(DAV, "status"), status_line(self.status)))
            return response
        for code, props in ((200, self.found), (404, [ET.Element(n) for n in self.missing])):
            if not props:
                continue
            prop = element(clark(DAV, "prop"), children=props)
            response.append(
                element(
                    clark(DAV, "propstat"), children=[prop, element(clark(DAV, "status"), status_line(code))]
                )
            )
        if len(response) == 1:  # nothing asked for: an empty 200 propstat keeps the response valid
            prop = element(clark(DAV, "prop"))
            response.append(
                element(
                    clark(DAV, "propstat"), children=[prop, element(clark(DAV, "status"), status_line(200))]
                )
            )
        return response


def serialise(root: ET.Element) -> bytes:
    """An answer's XML document, UTF-8 with its declaration."""
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def multistatus(responses: Iterable[PropStat], *, sync_token: str | None = None) -> bytes:
    root = element(clark(DAV, "multistatus"), children=[r.to_xml() for r in responses])
    if sync_token is not None:
        root.append(element(clark(DAV, "sync-token"), sync_token))
    return serialise(root)


def error_body(error: DavError) -> bytes:
    """RFC 4918 section 16's ``DAV:error`` naming the precondition, plus a readable message."""
    root = element(clark(DAV, "error"))
    if error.condition is not None:
        condition = element(
            clark(error.namespace, error.condition),
            children=[element(clark(DAV, "href"), h) for h in error.hrefs],
        )
        root.append(condition)
    root.append(element(clark(AGENDA, "message"), error.message))
    return serialise(root)
