from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sessions.handle import new_session_id
from sessions.signing import MAX_COOKIE_LENGTH, CookieSigner


def test_a_signed_id_verifies() -> None:
    session_id = new_session_id()
    signer = CookieSigner("key")
    assert signer.unsign(signer.sign(session_id)) == session_id


def test_ids_carry_at_least_128_random_bits() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(session_id) >= 22 for session_id in ids)


def _flip(text: str) -> str:
    return ("B" if text[0] == "A" else "A") + text[1:]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda session_id, stamp, mac: f"{_flip(session_id)}.{stamp}.{mac}",
        lambda session_id, stamp, mac: f"{session_id}.{_flip(stamp)}.{mac}",
        lambda session_id, stamp, mac: f"{session_id}.{stamp}.{_flip(mac)}",
        lambda session_id, stamp, mac: f"{session_id}.{stamp}",
        lambda session_id, stamp, mac: f"{session_id}.{stamp}.{mac}.{mac}",
    ],
    ids=["id", "timestamp", "signature", "unsigned", "extra part"],
)
def test_tampered_values_do_not_verify(tamper: Callable[[str, str, str], str]) -> None:
    signer = CookieSigner("key")
    session_id, stamp, mac = signer.sign(new_session_id()).split(".")
    assert signer.unsign(tamper(session_id, stamp, mac)) is None


def test_a_value_signed_with_an_unknown_key_does_not_verify() -> None:
    forged = CookieSigner("attacker's key").sign(new_session_id())
    assert CookieSigner("key").unsign(forged) is None


def test_signatures_older_than_max_age_do_not_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = CookieSigner("key", max_age=60)
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1_000_000.0)
        old = signer.sign("id")
    assert signer.unsign(old) is None
    assert CookieSigner("key").unsign(old) == "id"


def test_oversized_values_are_rejected_unread() -> None:
    signer = CookieSigner("key")
    assert signer.unsign(signer.sign("x" * MAX_COOKIE_LENGTH)) is None


def test_newest_key_signs_and_every_key_verifies() -> None:
    old_value = CookieSigner("old").sign("id")
    rotated = CookieSigner(["new", "old"])
    assert rotated.unsign(old_value) == "id"
    new_value = rotated.sign("id")
    assert CookieSigner("new").unsign(new_value) == "id"
    assert CookieSigner("old").unsign(new_value) is None


@pytest.mark.parametrize("secret_key", ["", [], ["new", ""]])
def test_empty_keys_are_refused(secret_key: str | list[str]) -> None:
    with pytest.raises(ValueError, match="secret_key"):
        CookieSigner(secret_key)


def test_max_age_rounds_up_to_the_timestamps_whole_seconds() -> None:
    assert CookieSigner("key", max_age=0.5).max_age == 1
