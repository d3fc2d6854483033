"""The bundled model's speed in each dtype, as static ``model.generate`` batches: what
``CHATSTREAM_DTYPE=auto`` is chosen from.

    python benchmarks/dtypes.py [--tokens 64] [--streams 1 8 16 32] [--rounds 5]
        [--dtypes float32 bfloat16 float16] [--device cpu] [--quick]

For each N, the same N greedy first turns (fresh prompts each round) run as one left-padded
static batch of ``model.generate`` with the model in each dtype, one right after the other, in
a rotating order. Aggregate tokens per second is all replies' tokens (up to the first
end-of-turn token) over the time from tokenizing to the last token. The table shows each
dtype's median tokens per second and its ratio to the first dtype's in the same round as median
(lowest-highest), and which dtype was fastest (by median ratio) at each N.
"""

from __future__ import annotations

import copy
import statistics

import torch
from _harness import (
    Direct,
    fresh_prompts,
    median_range,
    parser,
    print_machine,
    print_table,
    progress,
)


def main() -> None:
    arguments = parser(__doc__, serves=False, runs_model=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument(
        "--streams", type=int, nargs="+", default=[1, 8, 16, 32], help="batch sizes"
    )
    arguments.add_argument("--rounds", type=int, default=5, help="rounds of each, interleaved")
    arguments.add_argument(
        "--dtypes",
        nargs="+",
        choices=["float32", "bfloat16", "float16"],
        default=["float32", "bfloat16"],
        help="the dtypes compared; the first is the baseline",
    )
    args = arguments.parse_args()
    tokens, sizes, rounds = (
        (16, [1, 8], 1) if args.quick else (args.tokens, args.streams, args.rounds)
    )
    dtypes: list[str] = args.dtypes
    print_machine(
        f"dtypes: static batches of N greedy replies of {tokens} tokens, {rounds} rounds, "
        f"{args.device}"
    )
    loaded = Direct.load(args.device, "float32")
    directs = {
        dtype: Direct(copy.deepcopy(loaded.model).to(getattr(torch, dtype)), loaded.tokenizer)
        for dtype in dtypes
    }
    for direct in directs.values():  # warm-up
        direct.generate(fresh_prompts(1), 8)
    rates: dict[tuple[int, str], list[float]] = {}
    for number in range(rounds):
        for size in sizes:
            prompts = fresh_prompts(size)
            shift = number % len(dtypes)
            for dtype in dtypes[shift:] + dtypes[:shift]:
                batch = directs[dtype].generate(prompts, tokens)
                rate = sum(batch.tokens) / batch.seconds
                rates.setdefault((size, dtype), []).append(rate)
                progress(f"round {number + 1}: {size} x {dtype} {rate:.1f} tok/s")
    header = ["N", *(f"{dtype} tok/s" for dtype in dtypes)]
    header += [f"{dtype} / {dtypes[0]}" for dtype in dtypes[1:]]
    rows: list[list[object]] = []
    for size in sizes:
        base = rates[size, dtypes[0]]
        ratios = {
            dtype: [ours / theirs for ours, theirs in zip(rates[size, dtype], base, strict=True)]
            for dtype in dtypes
        }
        fastest = max(dtypes, key=lambda dtype: statistics.median(ratios[dtype]))
        row: list[object] = [size, *(f"{statistics.median(rates[size, d]):.1f}" for d in dtypes)]
        row += [median_range(ratios[dtype]) for dtype in dtypes[1:]]
        rows.append([*row, fastest])
    print_table([*header, "fastest"], rows)


if __name__ == "__main__":
    main()
