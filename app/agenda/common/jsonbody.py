"""The one strict JSON parser for request bodies: every service and the DB Service use it.

Python's `json` accepts what JSON does not (NaN, Infinity) and meets a deeply nested body
(200 KB of `[[[[...`) with RecursionError, which a caller that only expects ValueError turns into a
500. Here both, and any nesting deeper than `MAX_DEPTH`, are a `JSONBodyError` whose message a
service returns as a 400 problem+json. The depth is checked after parsing, iteratively, so a value
that parses but is deeper than any calendar or KV document needs never reaches code (or a Raft log,
or a snapshot writer) that walks it recursively.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["MAX_DEPTH", "JSONBodyError", "depth", "loads"]

# Deeper than any document the services or the DB legitimately carry, far below the interpreter's
# recursion limit.
MAX_DEPTH: Final = 64


class JSONBodyError(ValueError):
    """The body is not acceptable JSON; the message says why, for a 400 `detail`."""


def _reject_constant(name: str) -> Any:
    raise JSONBodyError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, `[]` is 1), without recursion."""
    # Only containers are walked: a scalar adds no level to the container it sits in. (A DB txn body
    # is mostly scalars; pushing each of them cost more than parsing the body.)
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
        for child in node.values() if isinstance(node, dict) else node:
            kind = type(child)
            if kind is dict or kind is list or (kind not in _SCALARS and isinstance(child, dict | list)):
                stack.append((child, level + 1))
    return deepest


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
# A ``\\uD800``-``\\uDFFF`` escape: only then can a parsed string hold a lone surrogate, which is not
# Unicode (no UTF-8 for it: the DB refuses the value, an export cannot encode it).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `raw` (bytes in any JSON encoding, or text) strictly; JSONBodyError on anything wrong."""
    try:
        text = raw.decode(json.detect_encoding(raw)) if isinstance(raw, bytes | bytearray) else raw
        value = _DECODER.decode(text)
    except JSONBodyError:
        raise
    except RecursionError:
        raise JSONBodyError(f"nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        # The decoder's own words ("Expecting value: line 1 column 1 (char 0)") are the reason; the
        # caller says what was refused ("body is not valid JSON: ...").
        raise JSONBodyError(str(exc)) from None
    if depth(value) > max_depth:
        raise JSONBodyError(f"nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise JSONBodyError("a string holds a lone surrogate (\\uD800-\\uDFFF): not Unicode") from None
    return value
