"""The embedded store: an in-process Redis (fakeredis, with Lua through lupa).

Used when no ``REDIS_URL`` is given, so one process runs the very same store, lease and
semaphore code (Lua scripts included) as a deployment on real Redis.
"""

from __future__ import annotations

import fakeredis
from redis.asyncio import Redis


def embedded_redis() -> Redis:
    """A fresh in-process Redis server and an asyncio client bound to it."""
    client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return client
