"""Loading and persisting a chat turn through the session store, by history length.

    python benchmarks/session_store.py [--rounds 100] [--quick]    # REDIS_URL, else db 15

For conversations of 10, 100 and 1000 turns (a turn: a 120-character user message and a
600-character reply with its id, finish reason and token counts), each round starts from a
fresh session, stored through the ``Session`` handle, and does what a ``/chat_stream`` turn does
to it, through the real ``RedisSessionStore``, ``Session`` handle and ``ChatPrompt`` on a real
Redis:

- load: ``RedisSessionStore.load`` + the ``Session`` handle + decoding the ``ChatPrompt``;
- (not timed) the handler's ``copy()`` of the history, and the new user message;
- persist: ``set_reply`` + ``save_session``, which writes the fields that changed.

Bytes written per turn are the field names and values ``save_session`` sends (counted by a
store subclass). Baselines on the same Redis and payloads: a raw ``HGETALL`` of the record and
a raw ``HSET`` of the same fields.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Collection, Mapping
from dataclasses import dataclass

from _harness import parser, percentile, print_machine, print_table, ratio
from redis.asyncio import Redis

from chatstream import ChatPrompt, Message
from sessions import RedisSessionStore, Session

HISTORY_TURNS = (10, 100, 1000)
USER_CHARS = 120
REPLY_CHARS = 600
PREFIX = "chatstream-benchmark:"
KEY = "chat_prompt"


class MeteredStore(RedisSessionStore):
    """Keeps the fields the last ``save`` set, as they go to Redis."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, prefix=PREFIX)
        self.fields: dict[str, str] = {}

    async def save(
        self,
        session_id: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        *,
        create: bool = True,
    ) -> None:
        self.fields = {f"d:{key}": value for key, value in changed.items()}
        await super().save(session_id, changed, deleted, create=create)


def text(length: int, seed: int) -> str:
    words = (f"word{(seed * 7919 + i) % 1000}" for i in range(length))
    return " ".join(words)[:length]


def reply(number: int) -> Message:
    return Message(
        "assistant", text(REPLY_CHARS, number), secrets.token_hex(16), "stop", 40 + number, 128
    )


def conversation(turns: int) -> ChatPrompt:
    messages: list[Message] = []
    for number in range(turns):
        messages += [Message("user", text(USER_CHARS, number)), reply(number)]
    return ChatPrompt("You are a helpful assistant.", messages)


async def timed(operation: Awaitable[object]) -> float:
    started = time.perf_counter()
    await operation
    return time.perf_counter() - started


def ms(samples: list[float], cut: int) -> str:
    return f"{percentile(samples, cut) * 1000:.2f}"


@dataclass
class Measured:
    """One history length: a row of the load table and one of the persist table."""

    turns: int
    written: int
    load_row: list[object]
    persist_row: list[object]


async def measure(redis: Redis, store: MeteredStore, turns: int, rounds: int) -> Measured:
    seeded = conversation(turns)
    loads, copies, persists, raw_reads, raw_writes = [], [], [], [], []
    record: dict[str, str] = {}
    for _ in range(rounds):
        seed = Session(store)
        seed.get_session()[KEY] = seeded
        await seed.save_session()
        record = store.fields
        session_id = seed.get_session_id()

        started = time.perf_counter()
        session = Session(store, session_id, await store.load(session_id))
        history: ChatPrompt = session.get_session()[KEY]
        loads.append(time.perf_counter() - started)

        started = time.perf_counter()
        history = history.copy()
        copies.append(time.perf_counter() - started)
        history.add_user_message(text(USER_CHARS, turns))
        new_reply = reply(turns)

        started = time.perf_counter()
        history.set_reply(
            new_reply.content,
            message_id=new_reply.message_id or "",
            finish_reason="stop",
            prompt_tokens=40,
            completion_tokens=128,
        )
        session.get_session()[KEY] = history
        await session.save_session()
        persists.append(time.perf_counter() - started)

        key = store.key(session_id)
        pairs = [item for field_value in store.fields.items() for item in field_value]
        raw_reads.append(await timed(redis.hgetall(key)))
        raw_writes.append(await timed(redis.hset(key, items=pairs)))
        await store.delete(session_id)
    written = size(store.fields)
    load_row: list[object] = [turns, len(record), f"{size(record) / 1024:.0f}"]
    load_row += [ms(loads, 50), ms(loads, 99), ms(raw_reads, 50)]
    load_row += [ratio(percentile(loads, 50), percentile(raw_reads, 50)), ms(copies, 50)]
    persist_row: list[object] = [turns, len(store.fields), written, ms(persists, 50)]
    persist_row += [ms(persists, 99), ms(raw_writes, 50)]
    persist_row.append(ratio(percentile(persists, 50), percentile(raw_writes, 50)))
    return Measured(turns, written, load_row, persist_row)


def size(fields: dict[str, str]) -> int:
    """Bytes of the field names and values."""
    return sum(len(field.encode()) + len(value.encode()) for field, value in fields.items())


async def run(rounds: int) -> list[Measured]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    redis = Redis.from_url(url)
    store = MeteredStore(redis)
    print(f"Redis {url}, {rounds} rounds per history length")
    try:
        return [await measure(redis, store, turns, rounds) for turns in HISTORY_TURNS]
    finally:
        await redis.aclose()


def main() -> None:
    arguments = parser(__doc__, serves=False)
    arguments.add_argument("--rounds", type=int, default=100, help="turns measured per length")
    args = arguments.parse_args()
    rounds = 10 if args.quick else args.rounds
    print_machine("session store: one turn's load and persist by history length")
    rows = asyncio.run(run(rounds))
    print_table(
        [
            "history turns",
            "record fields",
            "record KiB",
            "load p50 ms",
            "load p99 ms",
            "raw HGETALL p50 ms",
            "load / raw",
            "handler copy() p50 ms",
        ],
        [measured.load_row for measured in rows],
    )
    print_table(
        [
            "history turns",
            "fields written",
            "bytes written per turn",
            "persist p50 ms",
            "persist p99 ms",
            "raw HSET same fields p50 ms",
            "persist / raw",
        ],
        [measured.persist_row for measured in rows],
    )
    first, last = rows[0], rows[-1]
    growth = last.written / first.written
    grows = "grows" if growth > 2 else "does not grow"
    print(
        f"the turn write {grows} with the history: {first.written} bytes at {first.turns} "
        f"turns, {last.written} at {last.turns} turns ({growth:.1f}x)"
    )


if __name__ == "__main__":
    main()
