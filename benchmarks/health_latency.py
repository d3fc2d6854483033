"""``/healthz`` latency while 8 streams generate, next to the same server idle.

    python benchmarks/health_latency.py [--tokens 64] [--quick] [-- SERVE_ARGS]

One ``chatstream serve --max-concurrent 8`` subprocess (bundled model). A poller process of its
own (so this process's work never delays it) sends ``GET /healthz`` over one keep-alive
connection every 10 ms and times each answer: first for a few seconds while the server is idle
(the baseline), then while 8 greedy streams of ``--tokens`` tokens run, each in its own session,
all sent at once (samples from sending them until the last one ends). Target: p99 <= 10 ms
under full load.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from _harness import (
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

STREAMS = 8
TARGET_MS = 10.0

POLLER = """
import json, select, sys, time, httpx
samples = []
with httpx.Client(base_url=sys.argv[1], timeout=10) as client:
    client.get("/healthz").raise_for_status()
    while not select.select([sys.stdin], [], [], 0.01)[0]:
        started = time.monotonic()
        client.get("/healthz").raise_for_status()
        samples.append((started, time.monotonic() - started))
print(json.dumps(samples))
"""
"""Polls ``/healthz`` every 10 ms until a line (or EOF) arrives on its stdin, then prints
``[start, seconds]`` pairs as JSON."""


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per stream")
    args = arguments.parse_args()
    tokens, idle_seconds = (16, 1.0) if args.quick else (args.tokens, 5.0)
    print_machine(f"health latency: /healthz idle vs under {STREAMS} streams of {tokens} tokens")
    with served(["--max-concurrent", str(STREAMS), *args.server_args]) as server:
        asyncio.run(concurrent_turns(server.url, fresh_prompts(1), 8))  # warm-up
        command = [sys.executable, "-c", POLLER, server.url]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as poller:
            idle_from = time.monotonic()
            time.sleep(idle_seconds)
            loaded_from = time.monotonic()
            try:
                turns = asyncio.run(concurrent_turns(server.url, fresh_prompts(STREAMS), tokens))
            finally:
                loaded_until = time.monotonic()
                output, _ = poller.communicate(b"stop\n")
    polled: list[tuple[float, float]] = json.loads(output)
    idle = [seconds for start, seconds in polled if idle_from <= start < loaded_from]
    loaded = [seconds for start, seconds in polled if loaded_from <= start < loaded_until]
    rows: list[list[object]] = []
    for name, samples in (("idle", idle), (f"{STREAMS} streams", loaded)):
        cuts = [percentile(samples, 50), percentile(samples, 99), max(samples)]
        rows.append([name, len(samples), *(f"{cut * 1000:.2f}" for cut in cuts)])
    ratios = [ratio(percentile(loaded, cut), percentile(idle, cut)) for cut in (50, 99)]
    rows.append(["loaded / idle", "", *ratios, ratio(max(loaded), max(idle))])
    print_table(["/healthz", "samples", "p50 ms", "p99 ms", "max ms"], rows)
    tokens_done = sum(turn.completion_tokens for turn in turns)
    print(f"the {STREAMS} streams generated {tokens_done} tokens")
    met = percentile(loaded, 99) * 1000 <= TARGET_MS
    print(f"target p99 <= {TARGET_MS:.0f} ms under {STREAMS} streams: {verdict(met)}")


if __name__ == "__main__":
    main()
