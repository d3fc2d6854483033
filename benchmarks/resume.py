"""What recording replies costs, and how fast a dropped stream resumes.

    python benchmarks/resume.py [--tokens 64] [--rounds 3] [--quick] [--redis-url URL]

Two ``chatstream serve`` processes on the bundled model and the same real Redis (``--redis-url``,
else ``REDIS_URL``, else 127.0.0.1:6379/14, flushed first): one records every reply's events
(the default), one runs with ``--no-record-replies``. In each round both get N first turns at
once (greedy, ``--tokens`` each, prompts never sent before), N = 1 then 8, in turn (which one
goes first alternates by round): aggregate tokens per second is the completion tokens over
the time to the last ``done``; the ratio is recording / not recording, median over rounds.
Redis commands per second per stream are the recording server's calls in ``INFO
commandstats`` over one round, divided by its duration and N.
Attach latency: a reply is read for a few events, its connection dropped, and
``GET /chat_stream/{id}`` with ``Last-Event-ID`` sent again: the time from reconnecting to the
first missed event, p50 over the trials. Target: recording costs at most 3 % of throughput.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import redis as sync_redis
from _harness import (
    concurrent_turns,
    fresh_prompts,
    greedy_session,
    parser,
    percentile,
    print_machine,
    print_table,
    served,
    verdict,
)

COST_TARGET = 0.97
SSE = {"accept": "text/event-stream"}


def commands(client: sync_redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def tokens_per_second(url: str, streams: int, tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    turns = await concurrent_turns(url, fresh_prompts(streams), tokens)
    seconds = time.perf_counter() - started
    return sum(t.completion_tokens for t in turns) / seconds, seconds


async def attach_latency(url: str, tokens: int) -> float:
    """Seconds from reconnecting with Last-Event-ID to the first event missed."""
    client = await greedy_session(url, tokens)
    try:
        body = {"user_input": fresh_prompts(1)[0]}
        async with client.stream("POST", "/chat_stream", json=body, headers=SSE) as reply:
            message_id = reply.headers["x-message-id"]
            last = 0
            async for line in reply.aiter_lines():
                if line.startswith("id: "):
                    last = int(line.removeprefix("id: "))
                    if last == 3:
                        break
        await asyncio.sleep(0.2)  # a few more events are generated meanwhile
        headers = {**SSE, "last-event-id": str(last)}
        reconnected = time.perf_counter()
        path = f"/chat_stream/{message_id}"
        async with client.stream("GET", path, headers=headers) as resumed:
            async for line in resumed.aiter_lines():
                if line.startswith("id: "):
                    assert int(line.removeprefix("id: ")) == last + 1
                    return time.perf_counter() - reconnected
        raise RuntimeError("the resumed stream had no event")
    finally:
        await client.aclose()


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    arguments.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    args = arguments.parse_args()
    tokens, rounds, trials = (16, 1, 3) if args.quick else (args.tokens, args.rounds, 10)
    redis = sync_redis.Redis.from_url(args.redis_url)
    redis.flushdb()
    print_machine(f"resume: recording replies in Redis vs not, {tokens} tokens per reply")
    common = ["--redis-url", args.redis_url, "--max-concurrent", "8", "--rate-limit", "0"]
    common += ["--max-per-client", "0", *args.server_args]
    ratios: dict[int, list[float]] = {1: [], 8: []}
    rates: dict[tuple[str, int], list[float]] = {}
    per_stream: list[float] = []
    with served(common) as recording, served([*common, "--no-record-replies"]) as plain:
        for server in (recording, plain):
            asyncio.run(tokens_per_second(server.url, 1, 8))  # warm-up
        for number in range(rounds):
            for streams in (1, 8):
                # The two take turns going first, so neither always runs on the warmer machine.
                if number % 2:
                    off, _ = asyncio.run(tokens_per_second(plain.url, streams, tokens))
                before = commands(redis)
                on, seconds = asyncio.run(tokens_per_second(recording.url, streams, tokens))
                per_stream.append((commands(redis) - before) / seconds / streams)
                if not number % 2:
                    off, _ = asyncio.run(tokens_per_second(plain.url, streams, tokens))
                ratios[streams].append(on / off)
                rates.setdefault(("on", streams), []).append(on)
                rates.setdefault(("off", streams), []).append(off)
        latencies = [asyncio.run(attach_latency(recording.url, tokens)) for _ in range(trials)]
    rows = []
    for streams in (1, 8):
        spread = ratios[streams]
        median = statistics.median(spread)
        rows.append(
            [
                streams,
                f"{statistics.median(rates['on', streams]):.1f}",
                f"{statistics.median(rates['off', streams]):.1f}",
                f"{median:.3f} ({min(spread):.3f}-{max(spread):.3f})",
                verdict(median >= COST_TARGET),
            ]
        )
    header = ["streams", "recording tok/s", "not recording tok/s", "ratio (range)", ">= 0.97"]
    print_table(header, rows)
    print(
        f"Redis commands per second per stream (all of a turn's, recording on): "
        f"median {statistics.median(per_stream):.1f}, max {max(per_stream):.1f}"
    )
    print(
        f"attach latency (reconnect to the first missed event): p50 "
        f"{percentile(latencies, 50) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms "
        f"over {trials}"
    )
    redis.flushdb()


if __name__ == "__main__":
    main()
