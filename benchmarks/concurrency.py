"""Concurrent streams through the HTTP endpoint next to a static ``model.generate`` batch.

    python benchmarks/concurrency.py [--tokens 64] [--streams 1 2 4 8] [--quick] [-- SERVE_ARGS]

Served: a ``chatstream serve --max-concurrent 8`` subprocess (bundled model, its default
engine; server flags after ``--``, e.g. ``-- --prefix-cache-mb 0``) gets N first turns at once,
each in its own session, greedy, ``max_new_tokens`` fixed, streamed as server-sent events. Each
prompt opens with a tag never sent before, so only its chat template tokens can come from the
prefix cache. Aggregate tokens per second is the completion tokens of all N (the ``done``
events' usage) over the time from sending the requests to the last ``done``; time to first
token is per stream, from its request to its first ``delta``. The baseline is one greedy
``model.generate`` in this process of the left-padded static batch of the same N prompts and
token budget, timed from tokenizing to the last token. Server and baseline alternate (they
share the CPU). Targets at N = 8: served / static batch tokens/s >= 0.90; time to first token
p50 <= 0.5 s.
"""

from __future__ import annotations

import asyncio

from _harness import (
    PROMPTS,
    Direct,
    concurrent_turns,
    fresh_prompts,
    parser,
    percentile,
    print_machine,
    print_table,
    ratio,
    served,
    verdict,
)

THROUGHPUT_TARGET = 0.90
FIRST_TOKEN_TARGET = 0.5


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument(
        "--streams", type=int, nargs="+", default=[1, 2, 4, 8], help="concurrent streams"
    )
    args = arguments.parse_args()
    tokens, sizes = (16, [1, 8]) if args.quick else (args.tokens, args.streams)
    if max(sizes) > len(PROMPTS):
        arguments.error(f"at most {len(PROMPTS)} streams")
    print_machine(f"concurrency: N greedy streams of {tokens} tokens vs a static batch of N")
    direct = Direct.load()
    rows: list[list[object]] = []
    at_eight: tuple[float, float] | None = None  # served / batch, TTFT p50
    with served(["--max-concurrent", "8", *args.server_args]) as server:
        asyncio.run(concurrent_turns(server.url, fresh_prompts(1), 8))  # warm-up, both sides
        direct.generate(fresh_prompts(1), 8)
        for size in sizes:
            prompts = fresh_prompts(size)
            turns = asyncio.run(concurrent_turns(server.url, prompts, tokens))
            batch = direct.generate(prompts, tokens)
            served_rate = sum(t.completion_tokens for t in turns) / max(t.seconds for t in turns)
            batch_rate = sum(batch.tokens) / batch.seconds
            first_tokens = [t.first_token for t in turns]
            rows.append(
                [
                    size,
                    sum(t.completion_tokens for t in turns),
                    f"{served_rate:.1f}",
                    f"{batch_rate:.1f}",
                    ratio(served_rate, batch_rate),
                    f"{percentile(first_tokens, 50):.2f}",
                    f"{percentile(first_tokens, 99):.2f}",
                    f"{batch.seconds:.2f}",
                ]
            )
            if size == 8:
                at_eight = served_rate / batch_rate, percentile(first_tokens, 50)
    print_table(
        [
            "streams",
            "tokens",
            "served tok/s",
            "static batch tok/s",
            "served / batch",
            "served TTFT p50 s",
            "served TTFT p99 s",
            "batch wall s",
        ],
        rows,
    )
    if at_eight is not None:
        share, first_token = at_eight
        met = share >= THROUGHPUT_TARGET
        print(f"target 8 streams >= {THROUGHPUT_TARGET} of the static batch: {verdict(met)}")
        met = first_token <= FIRST_TOKEN_TARGET
        print(f"target TTFT p50 at 8 streams <= {FIRST_TOKEN_TARGET} s: {verdict(met)}")


if __name__ == "__main__":
    main()
