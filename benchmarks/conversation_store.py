"""What a turn costs the conversation store, by conversation length and by how many
conversations the owner has.

    python benchmarks/conversation_store.py [--rounds 100] [--quick]    # REDIS_URL, else db 15

Through the real :class:`~chatstream.conversations.RedisConversationStore` on a real Redis, as a
``/chat_stream`` turn uses it (a turn: a 120-character user message and a 600-character reply
with its id, finish reason and token counts):

- load: the conversation's record, decoded into a ``Conversation`` (``store.load``);
- write: the turn's two new messages written after the conversation's seeded turns
  (``store.write`` from there; the same positions each round, so the length stays the row's),
  which also moves the conversation to the top of its owner's list;
- list: the first page (50) of the owner's conversation list (``store.page``).

Two series: one conversation of 10, 100 and 1000 turns (the write must not grow with the
length), and an owner with 10, 100 and 1000 conversations of 10 turns each (nothing a turn does
may grow with the number of conversations; the list answers in milliseconds). Baselines on the
same Redis and payloads: a raw ``HGETALL`` of the record, a raw ``HSET`` of the same two
message fields and a raw ``ZREVRANGE`` of 50 members.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Awaitable

from _harness import parser, percentile, print_machine, print_table, ratio
from redis.asyncio import Redis

from chatstream.conversations.prompt import Message
from chatstream.conversations.redis_store import RedisConversationStore
from chatstream.conversations.store import Conversation
from chatstream.keys import ConversationKeys, OwnerKeys

SIZES = (10, 100, 1000)
USER_CHARS = 120
REPLY_CHARS = 600
PREFIX = "chatstream-benchmark"
PAGE = 50


def text(length: int, seed: int) -> str:
    words = (f"word{(seed * 7919 + i) % 1000}" for i in range(length))
    return " ".join(words)[:length]


def turn(number: int) -> list[Message]:
    reply = Message(
        "assistant", text(REPLY_CHARS, number), secrets.token_hex(16), "stop", 40 + number, 128
    )
    return [Message("user", text(USER_CHARS, number)), reply]


async def timed(operation: Awaitable[object]) -> float:
    started = time.perf_counter()
    await operation
    return time.perf_counter() - started


def ms(samples: list[float], cut: int) -> str:
    return f"{percentile(samples, cut) * 1000:.2f}"


async def seeded(store: RedisConversationStore, owner: str, turns: int) -> Conversation:
    """A new conversation of ``owner`` holding ``turns`` turns, written 50 turns at a time."""
    info = await store.create(owner, title=None, system_prompt=None, limit=10_000)
    conversation = await store.load(owner, info.id)
    assert conversation is not None
    for first in range(0, turns, 50):
        messages = [m for number in range(first, min(first + 50, turns)) for m in turn(number)]
        start = len(conversation.prompt.messages)
        written = await store.write(owner, conversation, start=start, messages=messages)
        assert written is not None
        conversation = written
    return conversation


class Series:
    """Samples of one row: the store's operations and their raw baselines."""

    def __init__(self) -> None:
        self.load: list[float] = []
        self.write: list[float] = []
        self.list: list[float] = []
        self.raw_read: list[float] = []
        self.raw_write: list[float] = []
        self.raw_list: list[float] = []
        self.record_bytes = 0
        self.written_bytes = 0


async def one_turn(
    redis: Redis,
    store: RedisConversationStore,
    owner: str,
    conversation: Conversation,
    seeded_turns: int,
) -> tuple[Conversation, Series]:
    """What a turn does to ``conversation``, timed, with the baselines, into a fresh Series."""
    series = Series()
    record = ConversationKeys.build(conversation.info.id, PREFIX).record
    index = OwnerKeys.build(owner, PREFIX).index

    started = time.perf_counter()
    loaded = await store.load(owner, conversation.info.id)
    series.load.append(time.perf_counter() - started)
    assert loaded is not None
    # The turn after the seeded ones, written again each round: the length stays the row's.
    start = 2 * seeded_turns
    new = turn(seeded_turns)
    started = time.perf_counter()
    written = await store.write(owner, loaded, start=start, messages=new)
    series.write.append(time.perf_counter() - started)
    assert written is not None
    started = time.perf_counter()
    page = await store.page(owner, limit=PAGE, before=None)
    series.list.append(time.perf_counter() - started)
    assert page.conversations[0].id == conversation.info.id  # the turn moved it up

    fields = await redis.hgetall(record)
    series.record_bytes = sum(len(k) + len(v) for k, v in fields.items())
    encoded = {
        f"m:{start + i}": json.dumps(m.to_dict(), ensure_ascii=False) for i, m in enumerate(new)
    }
    series.written_bytes = sum(len(k) + len(v.encode()) for k, v in encoded.items())
    series.raw_read.append(await timed(redis.hgetall(record)))
    series.raw_write.append(
        await timed(redis.hset(record, items=[x for pair in encoded.items() for x in pair]))
    )
    series.raw_list.append(await timed(redis.zrevrange(index, 0, PAGE - 1)))
    return written, series


def merged(parts: list[Series]) -> Series:
    total = Series()
    for part in parts:
        for name in ("load", "write", "list", "raw_read", "raw_write", "raw_list"):
            getattr(total, name).extend(getattr(part, name))
    total.record_bytes = parts[-1].record_bytes
    total.written_bytes = parts[-1].written_bytes
    return total


async def by_length(redis: Redis, store: RedisConversationStore, rounds: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for turns in SIZES:
        owner = f"user:benchmark-{secrets.token_hex(4)}"
        conversation = await seeded(store, owner, turns)
        parts = []
        for _ in range(rounds):
            conversation, part = await one_turn(redis, store, owner, conversation, turns)
            parts.append(part)
        s = merged(parts)
        rows.append(
            [
                turns,
                f"{s.record_bytes / 1024:.0f}",
                ms(s.load, 50),
                ms(s.load, 99),
                ratio(percentile(s.load, 50), percentile(s.raw_read, 50)),
                s.written_bytes,
                ms(s.write, 50),
                ms(s.write, 99),
                ratio(percentile(s.write, 50), percentile(s.raw_write, 50)),
            ]
        )
        await store.delete(owner, conversation.info.id)
    return rows


async def by_count(redis: Redis, store: RedisConversationStore, rounds: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for count in SIZES:
        owner = f"user:benchmark-{secrets.token_hex(4)}"
        conversations = [await seeded(store, owner, 10) for _ in range(count)]
        parts = []
        for number in range(rounds):  # turns spread over the owner's conversations
            position = number * 7919 % count
            conversations[position], part = await one_turn(
                redis, store, owner, conversations[position], 10
            )
            parts.append(part)
        s = merged(parts)
        rows.append(
            [
                count,
                ms(s.load, 50),
                ms(s.write, 50),
                ms(s.list, 50),
                ms(s.list, 99),
                ms(s.raw_list, 50),
                ratio(percentile(s.list, 50), percentile(s.raw_list, 50)),
            ]
        )
        for conversation in conversations:
            await store.delete(owner, conversation.info.id)
    return rows


async def run(rounds: int) -> tuple[list[list[object]], list[list[object]]]:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"
    redis = Redis.from_url(url)
    store = RedisConversationStore(redis, prefix=PREFIX)
    print(f"Redis {url}, {rounds} turns measured per row")
    try:
        return await by_length(redis, store, rounds), await by_count(redis, store, rounds)
    finally:
        await redis.aclose()


def main() -> None:
    arguments = parser(__doc__, serves=False)
    arguments.add_argument("--rounds", type=int, default=100, help="turns measured per row")
    args = arguments.parse_args()
    rounds = 10 if args.quick else args.rounds
    print_machine("conversation store: a turn's load, write and list")
    lengths, counts = asyncio.run(run(rounds))
    print_table(
        [
            "turns in the conversation",
            "record KiB",
            "load p50 ms",
            "load p99 ms",
            "load / raw HGETALL",
            "bytes written per turn",
            "write p50 ms",
            "write p99 ms",
            "write / raw HSET",
        ],
        lengths,
    )
    print_table(
        [
            "conversations of the owner",
            "load p50 ms",
            "write p50 ms",
            "list p50 ms",
            "list p99 ms",
            "raw ZREVRANGE p50 ms",
            "list / raw",
        ],
        counts,
    )
    first, last = float(str(lengths[0][6])), float(str(lengths[-1][6]))
    print(
        f"a turn's write at {SIZES[-1]} turns is {last / first:.2f}x the one at {SIZES[0]}; "
        f"the list at {SIZES[-1]} conversations answers in {counts[-1][3]} ms (p50)"
    )


if __name__ == "__main__":
    main()
