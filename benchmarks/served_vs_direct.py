"""One reply streamed through the HTTP endpoint of a fresh server next to ``model.generate``.

    python benchmarks/served_vs_direct.py [--tokens 64] [--rounds 5] [--device cpu]
        [--dtype auto] [--quick] [-- SERVE_ARGS]

Served: each round starts a ``chatstream serve`` subprocess (bundled SmolLM2-135M-Instruct,
``--device`` and ``--dtype`` as given), waits for ``/readyz`` (the model loaded and warmed up),
and streams the server's first reply as server-sent events from ``POST /chat_stream``, greedy
(``temperature: 0`` and ``max_new_tokens`` set with ``/set_generation_params``), one client:
the setting of a user meeting a freshly started server. Direct (the baseline): greedy
``model.generate`` of the same model in this process, on the prompt the server renders (the
same chat template code), after one warm-up call. Both use the same CPU cores, so they never
run at the same time: in each round one runs right after the other, the order alternating
from round to round. Tokens per second is the reply's tokens (the ``done`` event's usage; for
the baseline, its tokens up to the first end-of-turn token) over the time from sending the
request (tokenizing, for the baseline) to the last token. The machine may be shared and noisy,
so the verdict is on the median of the rounds' ratios, shown with their range. Target:
served / direct >= 0.97.
"""

from __future__ import annotations

import asyncio
import statistics

from _harness import (
    Direct,
    Turn,
    chat_turn,
    fresh_prompts,
    greedy_session,
    median_range,
    parser,
    placement_args,
    print_machine,
    print_table,
    progress,
    served,
    verdict,
)

TARGET = 0.97


async def served_turn(url: str, user_input: str, max_new_tokens: int) -> Turn:
    client = await greedy_session(url, max_new_tokens)
    try:
        return await chat_turn(client, user_input)
    finally:
        await client.aclose()


def main() -> None:
    arguments = parser(__doc__, serves=True, runs_model=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per reply")
    arguments.add_argument("--rounds", type=int, default=5, help="rounds, each on a fresh server")
    args = arguments.parse_args()
    tokens, rounds = (32, 1) if args.quick else (args.tokens, args.rounds)
    print_machine(
        f"served vs direct: the first greedy reply of {tokens} tokens of a fresh server, "
        f"{rounds} rounds"
    )
    direct = Direct.load(args.device, args.dtype)
    direct.generate(fresh_prompts(1), 8)  # warm-up: the server warms up before /readyz
    ratios: list[float] = []
    same_text = 0
    rows: list[list[object]] = []
    for number in range(1, rounds + 1):
        user_input = fresh_prompts(1)[0]
        with served([*placement_args(args), *args.server_args]) as server:
            if number % 2:
                turn = asyncio.run(served_turn(server.url, user_input, tokens))
                batch = direct.generate([user_input], tokens)
            else:
                batch = direct.generate([user_input], tokens)
                turn = asyncio.run(served_turn(server.url, user_input, tokens))
        served_rate = turn.completion_tokens / turn.seconds
        direct_rate = batch.tokens[0] / batch.seconds
        ratios.append(served_rate / direct_rate)
        progress(f"round {number}: served {served_rate:.1f}, direct {direct_rate:.1f} tok/s")
        same_text += turn.text == batch.texts[0]
        rows.append(
            [
                number,
                "served" if number % 2 else "direct",
                f"{turn.completion_tokens} / {batch.tokens[0]}",
                f"{served_rate:.1f}",
                f"{direct_rate:.1f}",
                f"{ratios[-1]:.2f}",
                f"{turn.first_token * 1000:.0f}",
            ]
        )
    header = ["round", "first", "tokens served / direct", "served tok/s", "direct tok/s"]
    print_table([*header, "served / direct", "served first token ms"], rows)
    print(f"served / direct, median (range) of {rounds} rounds: {median_range(ratios)}")
    print(f"same reply text as the baseline: {same_text}/{rounds} rounds")
    met = statistics.median(ratios) >= TARGET
    print(f"target served / direct tokens/s >= {TARGET} (median): {verdict(met)}")


if __name__ == "__main__":
    main()
