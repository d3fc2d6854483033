"""chatstream in front of an OpenAI-compatible upstream, next to the same client talking to the
upstream directly.

    python benchmarks/remote.py [--tokens 64] [--streams 1 8] [--rounds 3] [--batches 3]
                                [--upstream URL#MODEL | --upstream mock] [--quick] [-- SERVE_ARGS]

The upstream is ``transformers serve --continuous-batching`` on the bundled model (CPU),
unless ``--upstream http://host:port/v1#model`` names a running one, or ``--upstream mock``
asks for a ``chatstream serve`` of the mock engine (20 ms a token, no model: what chatstream
adds shows without a model's jitter). In front of it, a
``chatstream serve --model openai+<upstream>`` subprocess (remote engine, embedded store, 8
slots, no per-client caps). One client (httpx, streaming) sends N greedy first turns at once,
each with a prompt that opens with a tag never sent before, three ways: ``direct``, the
upstream's ``/v1/chat/completions``; ``/v1``, the same request to chatstream's
``/v1/chat/completions``; ``/chat_stream``, a turn in a session of its own (server-sent
events, the turn stored). Throughput is the completion tokens of all N (the usage each
reports) over the time from sending the requests to the last token; time to first token is
per stream, from its request to its first text. Each round runs, for each N, a number of
batches of N streams each way, the ways alternating in a rotating order; the table shows each
round's figures (tokens over the batches' time, time to first token p50 over their streams)
relative to that round's direct figures, as the median and range over the rounds. Targets:
throughput / direct >= 0.95, time to first token p50 - direct's <= 20 ms.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx
from _harness import (
    PROMPTS,
    SECRET_KEY,
    Turn,
    chat_turn,
    fresh_prompts,
    greedy_session,
    parser,
    percentile,
    print_machine,
    print_table,
    served,
    verdict,
)

from chatstream.model import default_cache_dir
from chatstream.testing import serve, transformers_serve

THROUGHPUT_TARGET = 0.95
MOCK_TOKEN_DELAY = 0.02
UNCAPPED = ["--max-concurrent", "8", "--max-per-client", "0", "--rate-limit", "0"]
FIRST_TOKEN_TARGET_MS = 20.0
WAYS = ("direct", "/v1", "/chat_stream")

Run = Callable[[str, int], Awaitable[Turn]]
"""One streamed reply to a prompt, of at most that many tokens."""


async def completion(client: httpx.AsyncClient, model: str, prompt: str, tokens: int) -> Turn:
    """A streamed ``/v1/chat/completions`` of ``client``'s server, greedy, read to its end."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": tokens,
        "temperature": 0,
        "top_p": 0.9,  # what chatstream sends by default: the same request both ways
    }
    started = time.perf_counter()
    first_token, finish = 0.0, ""
    parts: list[str] = []
    usage: dict[str, int] = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            for choice in chunk.get("choices") or []:
                if text := (choice.get("delta") or {}).get("content"):
                    first_token = first_token or time.perf_counter() - started
                    parts.append(text)
                finish = choice.get("finish_reason") or finish
            usage = chunk.get("usage") or usage
    seconds = time.perf_counter() - started
    prompt_tokens, completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
    return Turn("".join(parts), first_token, seconds, prompt_tokens, completion_tokens, finish)


async def streams(way: str, urls: dict[str, str], model: str, size: int, tokens: int) -> list[Turn]:
    """``size`` replies at once, ``way``; the time to set up sessions is not counted."""
    prompts = fresh_prompts(size)
    if way == "/chat_stream":
        clients = [await greedy_session(urls[way], tokens) for _ in prompts]
        runs = [chat_turn(client, prompt) for client, prompt in zip(clients, prompts, strict=True)]
    else:
        clients = [httpx.AsyncClient(base_url=urls[way], timeout=600) for _ in prompts]
        runs = [
            completion(client, model, prompt, tokens)
            for client, prompt in zip(clients, prompts, strict=True)
        ]
    try:
        return list(await asyncio.gather(*runs))
    finally:
        for client in clients:
            await client.aclose()


def throughput(runs: Sequence[Sequence[Turn]]) -> float:
    """Completion tokens over the time of the batches (each from its start to its last token)."""
    tokens = sum(turn.completion_tokens for run in runs for turn in run)
    return tokens / sum(max(turn.seconds for turn in run) for run in runs)


@contextmanager
def upstream(named: str | None) -> Iterator[tuple[str, str]]:
    """``(base URL without /v1, model)``: the named upstream, a chatstream mock engine, or
    transformers serve."""
    if named == "mock":
        args = ["--model", "mock", "--mock-token-delay", str(MOCK_TOKEN_DELAY), *UNCAPPED]
        with serve(args, secret_key=SECRET_KEY) as server:
            yield server.url, "mock"
    elif named is not None:
        base_url, _, model = named.partition("#")
        yield base_url.removesuffix("/").removesuffix("/v1"), model
    else:
        model = str(default_cache_dir())
        with transformers_serve(model) as server:
            yield server.url, model


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument("--streams", type=int, nargs="+", default=[1, 8], help="streams")
    arguments.add_argument("--rounds", type=int, default=3, help="rounds, interleaved")
    arguments.add_argument("--batches", type=int, default=3, help="batches of N per way, round")
    arguments.add_argument(
        "--upstream", help="http://host:port/v1#model (a running one), or mock (chatstream's)"
    )
    args = arguments.parse_args()
    tokens, sizes, rounds, batches = (
        (16, [1, 2], 1, 1) if args.quick else (args.tokens, args.streams, args.rounds, args.batches)
    )
    if max(sizes) > len(PROMPTS):
        arguments.error(f"at most {len(PROMPTS)} streams")
    upstream_name = args.upstream or "transformers serve --continuous-batching, bundled model"
    print_machine(
        f"remote engine in front of {upstream_name}: N greedy streams of {tokens} tokens, "
        f"{rounds} rounds of {batches} batches"
    )
    figures: dict[tuple[str, int], list[tuple[float, float]]] = {}  # (tok/s, TTFT p50) a round
    with upstream(args.upstream) as (upstream_url, model):
        front_args = ["--model", f"openai+{upstream_url}/v1#{model}", "--upstream-slots", "8"]
        with served([*front_args, *UNCAPPED, *args.server_args]) as front:
            urls = {"direct": upstream_url, "/v1": front.url, "/chat_stream": front.url}
            for way in WAYS:  # warm-up: the upstream's first batch, each way's connections
                asyncio.run(streams(way, urls, model, max(sizes), 8))
            for number in range(rounds):
                for size in sizes:
                    turns: dict[str, list[list[Turn]]] = {way: [] for way in WAYS}
                    for batch in range(batches):
                        shift = (number + batch) % len(WAYS)
                        for way in WAYS[shift:] + WAYS[:shift]:
                            turns[way].append(asyncio.run(streams(way, urls, model, size, tokens)))
                    for way, runs in turns.items():
                        first_tokens = [turn.first_token for run in runs for turn in run]
                        figures.setdefault((way, size), []).append(
                            (throughput(runs), percentile(first_tokens, 50))
                        )
    report(figures, sizes)


def report(figures: dict[tuple[str, int], list[tuple[float, float]]], sizes: list[int]) -> None:
    """The table, each way's figures relative to direct's of the same round, and verdicts."""
    rows: list[list[object]] = []
    met = {way: [True, True] for way in WAYS[1:]}
    for size in sizes:
        direct = figures["direct", size]
        rates, first_tokens = [rate for rate, _ in direct], [ttft * 1000 for _, ttft in direct]
        rows.append([size, "direct", _spread(rates, ".1f"), "", _spread(first_tokens, ".0f"), ""])
        for way in WAYS[1:]:
            ours = figures[way, size]
            ratios = [rate / base for (rate, _), (base, _) in zip(ours, direct, strict=True)]
            overheads = [(t - base) * 1000 for (_, t), (_, base) in zip(ours, direct, strict=True)]
            rows.append([size, way, "", _spread(ratios, ".3f"), "", _spread(overheads, "+.1f")])
            met[way][0] &= statistics.median(ratios) >= THROUGHPUT_TARGET
            met[way][1] &= statistics.median(overheads) <= FIRST_TOKEN_TARGET_MS
    header = ["streams", "way", "tok/s", "tok/s / direct", "TTFT p50 ms", "TTFT p50 - direct ms"]
    print_table(header, rows)
    for way, (rate_met, first_token_met) in met.items():
        print(
            f"{way}: tok/s / direct >= {THROUGHPUT_TARGET}: {verdict(rate_met)}; "
            f"TTFT p50 - direct <= {FIRST_TOKEN_TARGET_MS:.0f} ms: {verdict(first_token_met)}"
        )


def _spread(values: Sequence[float], spec: str) -> str:
    """The median, and the range when there are several values."""
    median = format(statistics.median(values), spec)
    if len(values) == 1:
        return median
    return f"{median} ({format(min(values), spec)} to {format(max(values), spec)})"


if __name__ == "__main__":
    main()
