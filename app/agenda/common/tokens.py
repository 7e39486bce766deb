"""Access tokens: Ed25519-signed JWTs (alg EdDSA) that only the User Service can issue.

The User Service holds the private key; the API gateway holds only public keys, indexed by key id
(`kid`), and checks signature, algorithm, `kid`, `iss`, `aud`, `exp`, `iat` and the presence of `sub`
and `jti` before any backend sees a request. Several public keys may be configured at once so a key
can be rotated without logging everybody out. Both sides use this module, which is why it lives in
`agenda.common`: the gateway verifies tokens without loading the User Service.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agenda.common.config import ConfigError, read_file

__all__ = [
    "ALGORITHM",
    "InvalidToken",
    "TokenIssuer",
    "TokenVerifier",
    "load_private_key",
    "load_public_key",
]

ALGORITHM: Final = "EdDSA"
_REQUIRED_CLAIMS: Final = ["iss", "aud", "sub", "exp", "iat", "jti"]


class InvalidToken(Exception):  # noqa: N818 - the condition the caller handles
    """The token must be refused; `reason` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def load_private_key(path: str, key: str = "signing_key") -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`; ConfigError naming `key` otherwise."""
    try:
        loaded = serialization.load_pem_private_key(read_file(key, path), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"no unencrypted PEM private key in {path} ({exc})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(key, f"{path} holds a {type(loaded).__name__}, expected an Ed25519 key")
    return loaded


def load_public_key(path: str, key: str = "public_keys") -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file `path` (SubjectPublicKeyInfo); ConfigError naming `key`."""
    try:
        loaded = serialization.load_pem_public_key(read_file(key, path))
    except ValueError as exc:
        raise ConfigError(key, f"no PEM public key in {path} ({exc})") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(key, f"{path} holds a {type(loaded).__name__}, expected an Ed25519 key")
    return loaded


@dataclass(frozen=True)
class TokenIssuer:
    """Issues access tokens for authenticated users."""

    private_key: Ed25519PrivateKey
    key_id: str
    issuer: str
    audience: str
    ttl: int = 3600
    clock: Callable[[], float] = time.time

    def issue(self, subject: str) -> tuple[str, int]:
        """(token, expires_in seconds) for `subject`."""
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.key_id})
        return token, self.ttl


class _VerifiedTokens:
    """Tokens that passed every check, with their claims: at most `size`, the oldest dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._claims: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, Any] | None:
        return self._claims.get(token)

    def add(self, token: str, claims: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            while len(self._claims) >= self.size:
                del self._claims[next(iter(self._claims))]
            self._claims[token] = claims

    def drop(self, token: str) -> None:
        with self._lock:
            self._claims.pop(token, None)

    def __len__(self) -> int:
        return len(self._claims)


@dataclass(frozen=True)
class TokenVerifier:
    """Verifies access tokens against public keys by `kid`; everything but EdDSA is refused.

    A client presents the same token on every request until it expires, and a full check (base64
    and JSON decoding, PyJWT's per-character checks, an Ed25519 signature) costs the gateway more
    than forwarding the request does. So the claims of up to `cache_size` tokens that passed are
    kept, by the token's exact text: such a token is signed, and its iss, aud, kid, alg, iat, nbf and
    required claims cannot change; only its expiry is checked again, as PyJWT checks it (expired
    once ``exp <= now - leeway``), with `clock`. Refused tokens are never kept. The keys are fixed
    for the verifier's life, so a kept token's signature stays valid.
    """

    public_keys: Mapping[str, Ed25519PublicKey]
    issuer: str
    audience: str
    leeway: float = 5.0
    cache_size: int = 4096
    clock: Callable[[], float] = time.time
    _verified: _VerifiedTokens = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_verified", _VerifiedTokens(self.cache_size))

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidToken saying why it is refused."""
        known = self._verified.get(token)
        if known is not None:
            if known["exp"] <= self.clock() - self.leeway:
                self._verified.drop(token)
                raise InvalidToken("token expired")
            return dict(known)  # a copy: the caller may change its claims
        claims = self._check(token)
        if isinstance(claims.get("exp"), int):
            self._verified.add(token, dict(claims))
        return claims

    def _check(self, token: str) -> dict[str, Any]:
        """Every check, in full (`verify` without its memory of tokens that passed)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("unsupported token algorithm")
        kid = header.get("kid")
        key = self.public_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown signing key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("token is not meant for this service") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token issuer is not trusted") from None
        except jwt.PyJWTError:
            raise InvalidToken("invalid token") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("invalid token subject")
        return claims
