"""Access tokens: issue/verify round trip and every way a token must be refused."""

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agenda.common.config import ConfigError
from agenda.common.tokens import (
    InvalidToken,
    TokenIssuer,
    TokenVerifier,
    load_private_key,
    load_public_key,
)

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
NOW = 1_800_000_000


def issuer(
    key: Ed25519PrivateKey = KEY,
    kid: str = "k1",
    aud: str = "agenda",
    iss: str = "agenda-users",
    now: float = NOW,
) -> TokenIssuer:
    return TokenIssuer(key, kid, iss, aud, ttl=600, clock=lambda: now)


def verifier(**kwargs: object) -> TokenVerifier:
    params = {"public_keys": {"k1": KEY.public_key()}, "issuer": "agenda-users", "audience": "agenda"}
    params.update(kwargs)
    return TokenVerifier(**params)  # type: ignore[arg-type]


def fresh(**kwargs: object) -> str:
    return issuer(now=time.time(), **kwargs).issue("alice")[0]  # type: ignore[arg-type]


def test_round_trip_has_every_claim_and_the_kid() -> None:
    token = fresh()
    claims = verifier().verify(token)
    assert claims["sub"] == "alice"
    assert {"iss", "aud", "sub", "exp", "iat", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 600
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "k1", "typ": "JWT"}


def test_expires_in_and_unique_ids() -> None:
    a, expires_in = issuer().issue("alice")
    b, _ = issuer().issue("alice")
    assert expires_in == 600
    assert a != b


def test_expired_token_is_refused() -> None:
    token, _ = issuer(now=time.time() - 3600).issue("alice")
    with pytest.raises(InvalidToken, match="expired"):
        verifier().verify(token)


def test_token_signed_by_another_key_is_refused() -> None:
    forged = fresh(key=OTHER)
    with pytest.raises(InvalidToken, match="invalid token"):
        verifier().verify(forged)


def test_wrong_audience_and_issuer_are_refused() -> None:
    with pytest.raises(InvalidToken, match="not meant"):
        verifier().verify(fresh(aud="someone-else"))
    with pytest.raises(InvalidToken, match="issuer"):
        verifier().verify(fresh(iss="mallory"))


def test_unknown_kid_is_refused_even_with_a_valid_signature() -> None:
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier().verify(fresh(kid="k2"))


def test_key_rotation_accepts_any_configured_kid() -> None:
    ring = verifier(public_keys={"k1": KEY.public_key(), "k2": OTHER.public_key()})
    assert ring.verify(fresh(key=OTHER, kid="k2"))["sub"] == "alice"
    with pytest.raises(InvalidToken):
        ring.verify(fresh(key=OTHER, kid="k1"))  # right key, wrong kid


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_and_hmac_confusion_are_refused() -> None:
    token = fresh()
    _, payload, _ = token.split(".")
    unsigned = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{payload}."
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier().verify(unsigned)
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "kid": "k1", "typ": "JWT"})
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    hs = f"{header}.{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier().verify(hs)


def test_tampered_payload_is_refused() -> None:
    header, payload, signature = fresh().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "mallory"
    with pytest.raises(InvalidToken):
        verifier().verify(f"{header}.{_b64(claims)}.{signature}")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "x" * 5000])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verifier().verify(garbage)


def test_missing_claims_are_refused() -> None:
    claims = {"iss": "agenda-users", "aud": "agenda", "sub": "alice", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1"})
    with pytest.raises(InvalidToken):
        verifier().verify(token)  # no iat, no jti


def test_key_files_load_and_errors_name_the_key(tmp_path: Path) -> None:
    private = tmp_path / "signing.pem"
    private.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = tmp_path / "public.pem"
    public.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert load_private_key(str(private)).public_key() == KEY.public_key()
    assert load_public_key(str(public)) == KEY.public_key()
    with pytest.raises(ConfigError) as info:
        load_private_key(str(public), "signing_key")
    assert info.value.key == "signing_key"
    with pytest.raises(ConfigError) as info:
        load_public_key(str(tmp_path / "missing.pem"), "public_keys")
    assert info.value.key == "public_keys"


# --- tokens that passed are remembered until they expire ----------------------------------------------


def counting_decode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every full check (PyJWT's decode) the verifier makes."""
    import agenda.common.tokens as tokens_module

    calls: list[str] = []
    real = tokens_module.jwt.decode

    def decode(token: str, *args: object, **kwargs: object) -> object:
        calls.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens_module.jwt, "decode", decode)
    return calls


def test_a_token_that_passed_is_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decode(monkeypatch)
    check = verifier()
    token = fresh()
    first = check.verify(token)
    assert check.verify(token) == first
    assert calls == [token]


def test_the_claims_handed_out_are_copies() -> None:
    check = verifier()
    token = fresh()
    check.verify(token)["sub"] = "mallory"
    assert check.verify(token)["sub"] == "alice"


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [time.time()]
    check = verifier(clock=lambda: now[0])
    token = fresh()
    exp = check.verify(token)["exp"]
    now[0] = exp + 5.0 - 0.001  # within the leeway, as PyJWT would accept it
    assert check.verify(token)["sub"] == "alice"
    now[0] = exp + 5.0  # exp <= now - leeway: expired, as PyJWT decides
    with pytest.raises(InvalidToken, match="expired"):
        check.verify(token)
    now[0] = time.time()  # forgotten, and checked in full again (PyJWT's clock: still valid)
    assert check.verify(token)["sub"] == "alice"


def test_refused_tokens_are_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decode(monkeypatch)
    check = verifier()
    forged = fresh(key=OTHER)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="invalid token"):
            check.verify(forged)
    assert len(calls) == 2
    assert len(check._verified) == 0


def test_at_most_cache_size_tokens_are_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    check = verifier(cache_size=2)
    tokens = [fresh() for _ in range(3)]
    for token in tokens:
        check.verify(token)
    assert len(check._verified) == 2
    calls = counting_decode(monkeypatch)
    check.verify(tokens[0])  # the oldest was dropped: checked in full again
    check.verify(tokens[2])
    assert calls == [tokens[0]]


def test_cache_size_zero_checks_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = counting_decode(monkeypatch)
    check = verifier(cache_size=0)
    token = fresh()
    check.verify(token)
    check.verify(token)
    assert calls == [token, token]
