"""Password hashing with scrypt (RFC 7914) and a random per-user salt; verification in constant time.

The stored record names its parameters, so they can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["SCRYPT_N", "SCRYPT_P", "SCRYPT_R", "hash_password", "verify_password"]

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
_MAXMEM: Final = 64 * 1024 * 1024
# Hash of nothing in particular: verifying an unknown user costs as much as verifying a known one.
_DUMMY: Final[dict[str, Any]] = {
    "alg": "scrypt",
    "n": SCRYPT_N,
    "r": SCRYPT_R,
    "p": SCRYPT_P,
    "salt": base64.b64encode(b"\0" * _SALT_BYTES).decode(),
    "hash": base64.b64encode(b"\0" * _HASH_BYTES).decode(),
}


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_HASH_BYTES)


def hash_password(
    password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> dict[str, Any]:
    """A JSON-serialisable record {alg, n, r, p, salt, hash} (salt and hash base64) for `password`."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _derive(password, salt, n, r, p)
    return {
        "alg": "scrypt",
        "n": n,
        "r": r,
        "p": p,
        "salt": base64.b64encode(salt).decode(),
        "hash": base64.b64encode(digest).decode(),
    }


def verify_password(password: str, record: Mapping[str, Any] | None) -> bool:
    """Whether `password` matches `record`; None (unknown user) costs the same and returns False."""
    known = record is not None
    rec = record if record is not None else _DUMMY
    try:
        if rec.get("alg") != "scrypt":
            return False
        salt = base64.b64decode(rec["salt"], validate=True)
        expected = base64.b64decode(rec["hash"], validate=True)
        digest = _derive(password, salt, int(rec["n"]), int(rec["r"]), int(rec["p"]))
    except (KeyError, ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected) and known
