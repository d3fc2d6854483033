"""The session cookie's value: the session id, timestamped and signed with itsdangerous."""

from __future__ import annotations

import math
from collections.abc import Sequence

from itsdangerous import BadData, TimestampSigner

# A signed id is under 100 characters; anything much longer is rejected before any HMAC work.
MAX_COOKIE_LENGTH = 256


class CookieSigner:
    """Signs session ids with the newest key and verifies them with any key.

    ``secret_key`` is one key or a list ordered newest first (itsdangerous wants newest last).
    ``max_age`` (seconds, ``None`` for no limit) bounds how old a signature may be; it is
    rounded up to whole seconds, the resolution of the signature's timestamp.
    """

    def __init__(self, secret_key: str | Sequence[str], max_age: float | None = None) -> None:
        keys = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if not keys or not all(keys):
            raise ValueError("secret_key must be a non-empty key or list of non-empty keys")
        self._signer = TimestampSigner(keys[::-1], salt="sessions.cookie")
        self.max_age = None if max_age is None else math.ceil(max_age)

    def sign(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode()

    def unsign(self, value: str) -> str | None:
        """The session id in ``value``, or ``None`` when it is not a valid, fresh signature."""
        if len(value) > MAX_COOKIE_LENGTH:
            return None
        try:
            return self._signer.unsign(value, max_age=self.max_age).decode()
        except BadData:
            return None
