"""Concurrent streams through the HTTP endpoint next to a static ``model.generate`` batch.

    python benchmarks/concurrency.py [--tokens 64] [--streams 1 8 16] [--rounds 5]
        [--device cpu] [--dtype auto] [--quick] [-- SERVE_ARGS]

Served: a ``chatstream serve`` subprocess (bundled model on ``--device`` as ``--dtype``, its
default engine and slots, no per-client caps; server flags after ``--``, e.g.
``-- --prefix-cache-mb 0``) gets N first turns at once, each in its own session, greedy,
``max_new_tokens`` fixed, streamed as server-sent events. Each prompt opens with a tag never
sent before, so only its chat template tokens can come from the prefix cache. Aggregate tokens
per second is the completion tokens of all N (the ``done`` events' usage) over the time from
sending the requests to the last
``done``; time to first token is per stream, from its request to its first ``delta``. The
baseline is one greedy ``model.generate`` in this process of the left-padded static batch of
the same N prompts and token budget, timed from tokenizing to the last token. Server and
baseline share the CPU: each round runs one right after the other, the order alternating, and
the table shows the median (lowest-highest) of the rounds' ratios. Targets at N = 8 and
N = 16: served / static batch tokens/s >= 0.90; time to first token p50 at N = 8 <= 0.5 s.
"""

from __future__ import annotations

import asyncio
import statistics

from _harness import (
    Direct,
    Turn,
    concurrent_turns,
    fresh_prompts,
    median_range,
    parser,
    percentile,
    placement_args,
    print_machine,
    print_table,
    progress,
    served,
    verdict,
)

THROUGHPUT_TARGET = 0.90
FIRST_TOKEN_TARGET = 0.5


def main() -> None:
    arguments = parser(__doc__, serves=True, runs_model=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument(
        "--streams", type=int, nargs="+", default=[1, 8, 16], help="concurrent streams"
    )
    arguments.add_argument("--rounds", type=int, default=5, help="rounds of each, interleaved")
    args = arguments.parse_args()
    tokens, sizes, rounds = (
        (16, [1, 8], 1) if args.quick else (args.tokens, args.streams, args.rounds)
    )
    print_machine(
        f"concurrency: N greedy streams of {tokens} tokens vs a static batch of N, "
        f"{rounds} rounds, {args.device} {args.dtype}"
    )
    direct = Direct.load(args.device, args.dtype)
    ratios: dict[int, list[float]] = {size: [] for size in sizes}
    served_rates: dict[int, list[float]] = {size: [] for size in sizes}
    batch_rates: dict[int, list[float]] = {size: [] for size in sizes}
    first_tokens: dict[int, list[float]] = {size: [] for size in sizes}
    # One machine plays every user: the per-client caps (4 at once, 30 a minute) are not what
    # is measured here.
    uncapped = ["--max-per-client", "0", "--rate-limit", "0"]
    with served([*placement_args(args), *uncapped, *args.server_args]) as server:
        direct.generate(fresh_prompts(1), 8)  # warm-up (the server warms up before /readyz)
        for number in range(rounds):
            for size in sizes:
                prompts = fresh_prompts(size)
                turns: list[Turn]
                if number % 2:
                    batch = direct.generate(prompts, tokens)
                    turns = asyncio.run(concurrent_turns(server.url, prompts, tokens))
                else:
                    turns = asyncio.run(concurrent_turns(server.url, prompts, tokens))
                    batch = direct.generate(prompts, tokens)
                served_rate = sum(t.completion_tokens for t in turns) / max(
                    t.seconds for t in turns
                )
                batch_rate = sum(batch.tokens) / batch.seconds
                served_rates[size].append(served_rate)
                batch_rates[size].append(batch_rate)
                ratios[size].append(served_rate / batch_rate)
                progress(
                    f"round {number + 1}: {size} streams {served_rate:.1f} served, "
                    f"{batch_rate:.1f} static"
                )
                first_tokens[size] += [t.first_token for t in turns]
    rows: list[list[object]] = []
    for size in sizes:
        rows.append(
            [
                size,
                f"{statistics.median(served_rates[size]):.1f}",
                f"{statistics.median(batch_rates[size]):.1f}",
                median_range(ratios[size]),
                f"{percentile(first_tokens[size], 50):.2f}",
                f"{percentile(first_tokens[size], 99):.2f}",
            ]
        )
    print_table(
        [
            "streams",
            "served tok/s",
            "static batch tok/s",
            "served / batch",
            "served TTFT p50 s",
            "served TTFT p99 s",
        ],
        rows,
    )
    for size in (8, 16):
        if size in sizes:
            met = statistics.median(ratios[size]) >= THROUGHPUT_TARGET
            print(
                f"target {size} streams >= {THROUGHPUT_TARGET} of the static batch: {verdict(met)}"
            )
    if 8 in sizes:
        met = percentile(first_tokens[8], 50) <= FIRST_TOKEN_TARGET
        print(f"target TTFT p50 at 8 streams <= {FIRST_TOKEN_TARGET} s: {verdict(met)}")


if __name__ == "__main__":
    main()
