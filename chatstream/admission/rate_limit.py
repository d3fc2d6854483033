"""``RedisRateLimiter``: how many turns one client may start per minute, cluster-wide.

Each client has a sorted set of when its turns of the last minute started, in milliseconds of
Redis ``TIME``, under a hash tag of its own (:func:`chatstream.keys.rate_limit_key`), so a
cluster spreads the clients and instances never compare clocks. One Lua script drops the starts
older than the window, then records the new one or says when the oldest leaves the window. The
set expires a window after its last start: an idle client costs nothing.
"""

from __future__ import annotations

import logging
import math
import secrets

from ..config import AdmissionConfig
from ..errors import ServiceUnavailable, TooManyRequests
from ..keys import DEFAULT_PREFIX, rate_limit_key
from ..redis_client import REDIS_ERRORS, RedisClient
from .scripts import lua

WINDOW = 60.0
"""Seconds of the sliding window that ``per_minute`` counts."""

UNAVAILABLE = "the rate limit store is unavailable"

logger = logging.getLogger(__name__)


class RedisRateLimiter:
    """At most ``per_minute`` turns started by one client in any :data:`WINDOW` seconds, across
    every instance sharing ``redis``; ``per_minute=0`` turns the limit off (no Redis call)."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        per_minute: int = AdmissionConfig.rate_limit,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must not be negative")
        self.per_minute = per_minute
        self._prefix = prefix
        self._script = redis.register_script(lua("rate_limit"))

    async def hit(self, client: str) -> None:
        """Count a turn that ``client`` starts now.

        Raises :class:`~chatstream.errors.TooManyRequests`, whose ``retry_after`` is the
        seconds until the client may start one again, when it started ``per_minute`` turns in
        the last minute (a refused turn does not count); and
        :class:`~chatstream.errors.ServiceUnavailable` on a Redis error.
        """
        if not self.per_minute:
            return
        key = rate_limit_key(client, self._prefix)
        args = (secrets.token_hex(8), self.per_minute, round(WINDOW * 1000))
        try:
            wait_ms = int(await self._script(keys=[key], args=args))
        except REDIS_ERRORS as exc:
            logger.warning("rate limit store error: %r", exc)
            raise ServiceUnavailable(UNAVAILABLE) from exc
        if wait_ms > 0:
            raise TooManyRequests(
                f"at most {self.per_minute} turns per minute", retry_after=math.ceil(wait_ms / 1000)
            )
