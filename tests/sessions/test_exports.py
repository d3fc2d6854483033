from __future__ import annotations

import inspect

import sessions


def test_the_public_surface_is_exactly_this() -> None:
    assert sessions.__all__ == [
        "RedisSessionStore",
        "SerializationError",
        "Session",
        "SessionError",
        "SessionMiddleware",
        "SessionNotLoaded",
        "SessionStore",
        "StoreUnavailable",
        "dumps",
        "embedded_redis",
        "loads",
        "register_type",
    ]


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert sessions.__all__ == sorted(sessions.__all__)
    for name in sessions.__all__:
        assert getattr(sessions, name).__module__.startswith("sessions.")


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(sessions).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(sessions.__all__)
