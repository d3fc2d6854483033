"""Concurrent streams in this process: the engines, and transformers' own continuous batching,
next to a static ``model.generate`` batch of the same prompts.

    python benchmarks/engine_throughput.py [--tokens 64] [--streams 1 8 16 32] [--rounds 5]
        [--slots 16] [--kinds batched threaded cb] [--device cpu] [--dtype auto] [--quick]

For each N, N greedy first turns (distinct prompts, the bundled SmolLM2-135M-Instruct on
``--device`` as ``--dtype``, a fixed token budget; each prompt opens with a tag never used
before, so that the prefix cache only holds their chat template tokens, as for new users) are
generated four ways: one left-padded static batch of ``model.generate`` (the baseline; for
N = 1, plain ``generate``); N concurrent streams of ``BatchedEngine`` (``--slots`` rows, the
served default: beyond them streams wait); N of ``TransformersEngine(slots=N)`` (one
``generate`` per thread; the default ``slots=1`` would run them one after another); and N
streaming requests to transformers' ``ContinuousBatchingManager``
(``model.init_continuous_batching()``, default settings but a small KV cache). Aggregate tokens
per second is all replies' tokens (up to the first end-of-turn token) over the time from
tokenizing (or submitting) to the last token; time to first token is per stream.
All share the CPU, so they never overlap: each round runs them in turn, in a rotating order
(``--kinds`` picks which run besides the static batch). The table shows medians over rounds,
and each round's ratio to the static batch of the same round as median (lowest-highest): the
machine may be shared and noisy. Targets: BatchedEngine at N = 1
>= 0.97 of plain ``generate``; at N = 8 and N = 16 >= 0.90 of the static batch.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from _harness import (
    Direct,
    fresh_prompts,
    median_range,
    parser,
    percentile,
    print_machine,
    print_table,
    progress,
    verdict,
)

from chatstream.engines.base import Engine, GenerationDone, GenerationParams, GenerationRequest
from chatstream.engines.batched import BatchedEngine
from chatstream.engines.config import BatchingConfig
from chatstream.engines.hf import TransformersEngine

SINGLE_TARGET = 0.97
BATCH_TARGET = 0.90
STATIC = "static batch"
KINDS = {
    "batched": "BatchedEngine",
    "threaded": "TransformersEngine(slots=N)",
    "cb": "transformers CB",
}
REQUEST_NUMBERS = itertools.count()


@dataclass
class Run:
    tokens: int
    seconds: float
    first_tokens: list[float]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def static_batch(direct: Direct, prompts: Sequence[str], tokens: int) -> Run:
    batch = direct.generate(prompts, tokens)
    return Run(sum(batch.tokens), batch.seconds, [])


async def engine_streams(engine: Engine, prompts: Sequence[str], tokens: int) -> Run:
    started = time.perf_counter()
    params = GenerationParams(tokens, temperature=0)

    async def stream(prompt: str) -> tuple[float, int]:
        first_token = 0.0
        async for event in engine.generate(GenerationRequest(prompt, params)):
            if isinstance(event, GenerationDone):
                return first_token, event.completion_tokens
            first_token = first_token or time.perf_counter() - started
        raise RuntimeError("the stream ended without GenerationDone")

    results = await asyncio.gather(*(stream(prompt) for prompt in prompts))
    seconds = time.perf_counter() - started
    return Run(sum(n for _, n in results), seconds, [first for first, _ in results])


async def manager_streams(manager: Any, direct: Direct, prompts: Sequence[str], tokens: int) -> Run:
    """Streaming requests to transformers' ``ContinuousBatchingManager``."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()

    async def stream(prompt: str) -> tuple[float, int]:
        ids = direct.tokenizer.encode(prompt, add_special_tokens=False)
        first_token = 0.0
        done: asyncio.Future[int] = loop.create_future()

        def on_output(output: Any) -> None:
            nonlocal first_token
            if output.generated_tokens and not first_token:
                first_token = time.perf_counter() - started
            if output.is_finished() and not done.done():
                done.set_result(len(output.generated_tokens))

        request_id = f"benchmark-{next(REQUEST_NUMBERS)}"
        manager.register_result_handler(request_id, on_output)
        manager.add_request(ids, request_id, max_new_tokens=tokens, streaming=True)
        generated = await done
        return first_token, generated

    results = await asyncio.gather(*(stream(direct.render(prompt)) for prompt in prompts))
    seconds = time.perf_counter() - started
    return Run(sum(n for _, n in results), seconds, [first for first, _ in results])


def start_manager(direct: Direct, tokens: int) -> Any:
    from transformers import ContinuousBatchingConfig, GenerationConfig

    model = direct.model
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=tokens,
        do_sample=False,
        eos_token_id=model.generation_config.eos_token_id,
        pad_token_id=model.generation_config.pad_token_id,
    )
    # On CPU the manager would size its KV cache from the machine's RAM: give it 16k tokens.
    cache = ContinuousBatchingConfig(num_blocks=64, page_size=256, max_requests_per_batch=8)
    manager = model.init_continuous_batching(config, continuous_batching_config=cache)
    manager.start()
    return manager


def main() -> None:
    arguments = parser(__doc__, serves=False, runs_model=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument(
        "--streams", type=int, nargs="+", default=[1, 8, 16, 32], help="concurrent streams"
    )
    arguments.add_argument("--rounds", type=int, default=5, help="rounds of each, interleaved")
    arguments.add_argument(
        "--slots", type=int, default=BatchingConfig.slots, help="BatchedEngine's rows"
    )
    arguments.add_argument(
        "--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), help="what runs"
    )
    args = arguments.parse_args()
    tokens, sizes, rounds = (
        (16, [1, 8], 1) if args.quick else (args.tokens, args.streams, args.rounds)
    )
    print_machine(
        f"engine throughput: N greedy streams of {tokens} tokens vs a static batch of N, "
        f"{rounds} rounds, BatchedEngine slots={args.slots}, {args.device} {args.dtype}"
    )
    direct = Direct.load(args.device, args.dtype)
    batched = BatchedEngine(direct.model, direct.tokenizer, slots=args.slots)
    threaded = {n: TransformersEngine(direct.model, direct.tokenizer, slots=n) for n in sizes}
    manager = start_manager(direct, tokens) if "cb" in args.kinds else None

    def rendered(prompts: list[str]) -> list[str]:
        return [direct.render(prompt) for prompt in prompts]

    every: dict[str, Callable[[list[str]], Run]] = {
        STATIC: lambda p: static_batch(direct, p, tokens),
        KINDS["batched"]: lambda p: asyncio.run(engine_streams(batched, rendered(p), tokens)),
        KINDS["threaded"]: lambda p: asyncio.run(
            engine_streams(threaded[len(p)], rendered(p), tokens)
        ),
        KINDS["cb"]: lambda p: asyncio.run(manager_streams(manager, direct, rendered(p), tokens)),
    }
    names = [STATIC, *(KINDS[kind] for kind in KINDS if kind in args.kinds)]
    kinds = {name: every[name] for name in names}
    runs: dict[tuple[int, str], list[Run]] = {}
    try:
        asyncio.run(batched.warm_up())
        for generate in kinds.values():  # warm-up
            generate(fresh_prompts(1))
        for number in range(rounds):
            for size in sizes:
                prompts = fresh_prompts(size)  # the same for each kind, new for each run
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    run = kinds[name](prompts)
                    runs.setdefault((size, name), []).append(run)
                    progress(f"round {number + 1}: {size} x {name} {run.rate:.1f} tok/s")
    finally:
        if manager is not None:
            manager.stop(block=True)
        engines: list[Engine] = [batched, *threaded.values()]
        for engine in engines:
            asyncio.run(engine.aclose())

    def ratios(size: int, name: str) -> list[float]:
        pairs = zip(runs[size, name], runs[size, STATIC], strict=True)
        return [ours.rate / base.rate for ours, base in pairs]

    header: list[str] = ["streams", f"{STATIC} tok/s", "per stream"]
    for name in names[1:]:
        header += [f"{name} tok/s", "/ static", "TTFT p50 s"]
    table: list[list[object]] = []
    for size in sizes:
        static_rate = statistics.median(r.rate for r in runs[size, STATIC])
        row: list[object] = [size, f"{static_rate:.1f}", f"{static_rate / size:.1f}"]
        for name in names[1:]:
            firsts = [first for run in runs[size, name] for first in run.first_tokens]
            row += [
                f"{statistics.median(run.rate for run in runs[size, name]):.1f}",
                median_range(ratios(size, name)),
                f"{percentile(firsts, 50):.2f}",
            ]
        table.append(row)
    print_table(header, table)
    if KINDS["batched"] not in names:
        return
    for size, target in ((1, SINGLE_TARGET), (8, BATCH_TARGET), (16, BATCH_TARGET)):
        if size in sizes:
            met = statistics.median(ratios(size, KINDS["batched"])) >= target
            print(f"target BatchedEngine {size} streams >= {target} of static: {verdict(met)}")


if __name__ == "__main__":
    main()
