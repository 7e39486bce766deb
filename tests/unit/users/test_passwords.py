"""scrypt password records: random salts, verification, and refusal of anything malformed."""

import pytest

from agenda.users.passwords import SCRYPT_N, SCRYPT_P, SCRYPT_R, hash_password, verify_password

FAST = {"n": 2**10, "r": 8, "p": 1}


def test_defaults_match_the_specified_parameters() -> None:
    assert (SCRYPT_N, SCRYPT_R, SCRYPT_P) == (2**14, 8, 1)
    record = hash_password("correct horse")
    assert (record["alg"], record["n"], record["r"], record["p"]) == ("scrypt", 2**14, 8, 1)
    assert verify_password("correct horse", record)


def test_right_and_wrong_passwords() -> None:
    record = hash_password("correct horse", **FAST)
    assert verify_password("correct horse", record)
    assert not verify_password("correct horsE", record)
    assert not verify_password("", record)


def test_salt_is_random_so_equal_passwords_hash_differently() -> None:
    a, b = hash_password("same password", **FAST), hash_password("same password", **FAST)
    assert a["salt"] != b["salt"]
    assert a["hash"] != b["hash"]
    assert "same password" not in str(a)


def test_unknown_user_is_refused_after_the_same_work() -> None:
    assert not verify_password("anything at all", None)


@pytest.mark.parametrize(
    "damage",
    [
        {"alg": "md5"},
        {"salt": "not base64!!"},
        {"hash": "%%%"},
        {"n": "many"},
        {"n": 3},  # not a power of two: hashlib raises ValueError
    ],
)
def test_malformed_records_never_verify(damage: dict) -> None:
    record = {**hash_password("correct horse", **FAST), **damage}
    assert not verify_password("correct horse", record)


def test_missing_fields_never_verify() -> None:
    record = hash_password("correct horse", **FAST)
    del record["salt"]
    assert not verify_password("correct horse", record)
