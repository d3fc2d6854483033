"""The Redis session store: one hash per session, expiry enforced by Redis itself.

Hash layout: ``created`` holds the creation time (ms, Redis clock) and each session key ``k``
lives in the field ``d:k``. Every read-modify-write is one Lua script that reads the clock with
``TIME``, so app servers' clocks never matter. The key's TTL is the idle timeout, slid on each
load and save, capped at what remains of the absolute lifetime; a script that finds the
lifetime spent deletes the record.

Give the client ``socket_timeout`` and ``socket_connect_timeout`` (and a modest ``retry``): an
outage then surfaces quickly as :class:`~sessions.errors.StoreUnavailable`, never as a hang.
Every error of the client is that one error, with a fixed message (the detail goes to the log):
connection, timeout, read-only replica, failover, MOVED/ASK or cluster down, out of memory, or
any other reply error, a cluster client's own errors (no node to ask, a slot not covered: outside
redis-py's ``RedisError``), and an ``OSError`` the client let through.

Every key a script touches is one session's, under its hash tag, so the store works on a Redis
Cluster (:class:`~redis.asyncio.cluster.RedisCluster`) as on one server or a Sentinel's master.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from redis import exceptions
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sessions.errors import StoreUnavailable
from sessions.stores.base import SessionStore

logger = logging.getLogger(__name__)

_DATA = "d:"

# Milliseconds left of the record's absolute lifetime, or nil (record deleted) when spent.
_LIFETIME_LEFT = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function lifetime_left(key, lifetime)
  local created = tonumber(redis.call('HGET', key, 'created'))
  if not created then return nil end
  local left = created + lifetime - now_ms()
  if left > 0 then return left end
  redis.call('DEL', key)
  return nil
end
"""

# KEYS: session hash. ARGV: idle ms, lifetime ms.
_LOAD = (
    _LIFETIME_LEFT
    + """
local left = lifetime_left(KEYS[1], tonumber(ARGV[2]))
if not left then return false end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[1]), left))
return redis.call('HGETALL', KEYS[1])
"""
)

# KEYS: session hash. ARGV: idle ms, lifetime ms, create (1/0), number of fields to set,
# the field/value pairs to set, then the fields to delete.
_SAVE = (
    _LIFETIME_LEFT
    + """
local key, lifetime = KEYS[1], tonumber(ARGV[2])
local left = lifetime_left(key, lifetime)
if not left then
  if ARGV[3] ~= '1' then return 0 end
  redis.call('HSET', key, 'created', now_ms())
  left = lifetime
end
local last_set = 4 + 2 * tonumber(ARGV[4])
for i = 5, last_set, 2 do redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
for i = last_set + 1, #ARGV do redis.call('HDEL', key, ARGV[i]) end
redis.call('PEXPIRE', key, math.min(tonumber(ARGV[1]), left))
return 1
"""
)

# KEYS: lock. ARGV: token, ttl ms.
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS: lock. ARGV: token.
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except (exceptions.RedisError, exceptions.RedisClusterException, OSError) as exc:
        logger.warning("session store unavailable: %s: %s", type(exc).__name__, exc)
        raise StoreUnavailable() from exc


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisSessionStore(SessionStore):
    """Sessions in Redis (or the embedded fakeredis): one server, a Sentinel's master or a
    Redis Cluster.

    ``idle_timeout``: seconds without a load or save before a session ends.
    ``absolute_lifetime``: seconds after creation when a session ends regardless.
    ``prefix`` starts every key (``<prefix>session:{<id>}``): give each app sharing a Redis
    its own (``chatstream serve`` uses ``chatstream:``).
    ``redis`` is public so other layers can reuse the client (and its timeouts).
    """

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        prefix: str = "",
        idle_timeout: float = 7 * 86400,
        absolute_lifetime: float = 30 * 86400,
    ) -> None:
        if idle_timeout <= 0 or absolute_lifetime <= 0:
            raise ValueError("idle_timeout and absolute_lifetime must be positive")
        self.redis = redis
        self.prefix = prefix
        self.idle_timeout = idle_timeout
        self.absolute_lifetime = absolute_lifetime
        self._expiry_args = (_ms(idle_timeout), _ms(absolute_lifetime))
        self._load = redis.register_script(_LOAD)
        self._save = redis.register_script(_SAVE)
        self._renew_lock = redis.register_script(_RENEW_LOCK)
        self._release_lock = redis.register_script(_RELEASE_LOCK)

    def key(self, session_id: str, *parts: str) -> str:
        """The Redis key of a session's record, or with ``parts`` of something it owns.

        The id is a hash tag, so all of a session's keys share one cluster slot.
        """
        return ":".join((f"{self.prefix}session:{{{session_id}}}", *parts))

    async def load(self, session_id: str) -> dict[str, str] | None:
        with _unavailable_on_error():
            reply = await self._load(keys=[self.key(session_id)], args=self._expiry_args)
        if reply is None:
            return None
        fields = [_text(item) for item in reply]
        return {
            field.removeprefix(_DATA): value
            for field, value in zip(fields[::2], fields[1::2], strict=True)
            if field.startswith(_DATA)
        }

    async def save(
        self,
        session_id: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        *,
        create: bool = True,
    ) -> None:
        pairs = [item for key, value in changed.items() for item in (_DATA + key, value)]
        args: list[str | int] = [*self._expiry_args, int(create), len(changed), *pairs]
        args += [_DATA + key for key in deleted]
        with _unavailable_on_error():
            await self._save(keys=[self.key(session_id)], args=args)

    async def delete(self, session_id: str) -> None:
        with _unavailable_on_error():
            await self.redis.delete(self.key(session_id))

    async def acquire_lock(self, session_id: str, name: str, ttl: float) -> str | None:
        token = secrets.token_urlsafe(16)
        with _unavailable_on_error():
            acquired = await self.redis.set(
                self.key(session_id, "lock", name), token, nx=True, px=_ms(ttl)
            )
        return token if acquired else None

    async def renew_lock(self, session_id: str, name: str, token: str, ttl: float) -> bool:
        with _unavailable_on_error():
            renewed = await self._renew_lock(
                keys=[self.key(session_id, "lock", name)], args=[token, _ms(ttl)]
            )
        return bool(renewed)

    async def release_lock(self, session_id: str, name: str, token: str) -> bool:
        with _unavailable_on_error():
            released = await self._release_lock(
                keys=[self.key(session_id, "lock", name)], args=[token]
            )
        return bool(released)

    async def ping(self) -> None:
        with _unavailable_on_error():
            await self.redis.ping()
