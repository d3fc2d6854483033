"""One reply streamed through the HTTP endpoint next to ``model.generate`` in this process.

    python benchmarks/served_vs_direct.py [--tokens 128] [--rounds 3] [--quick] [-- SERVE_ARGS]

Served: a ``chatstream serve`` subprocess (bundled SmolLM2-135M-Instruct) streams a first turn's
reply as server-sent events from ``POST /chat_stream``, greedy (``temperature: 0`` and
``max_new_tokens`` set with ``/set_generation_params``), each round in a fresh session. Direct
(the baseline): greedy ``model.generate`` of the same model in this process, on the prompt the
server renders (the same chat template code). Both use the same CPU cores, so they never run at
the same time: the rounds alternate and the table shows medians, and the best round of each
(other load on the machine only ever slows a round down). Tokens per second is the
reply's tokens (the ``done`` event's usage; for the baseline, its tokens up to the first
end-of-turn token) over the time from sending the request (tokenizing, for the baseline) to the
last token. Target: served / direct >= 0.97.
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
    parser,
    print_machine,
    print_table,
    ratio,
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
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=128, help="max_new_tokens per reply")
    arguments.add_argument("--rounds", type=int, default=3, help="rounds of each, interleaved")
    args = arguments.parse_args()
    tokens, rounds = (32, 1) if args.quick else (args.tokens, args.rounds)
    print_machine(f"served vs direct: one greedy reply of {tokens} tokens, {rounds} rounds")
    direct = Direct.load()
    served_turns: list[Turn] = []
    direct_rates: list[float] = []
    same_text = 0
    rows: list[list[object]] = []
    with served(args.server_args) as server:
        asyncio.run(served_turn(server.url, fresh_prompts(1)[0], 8))  # warm-up, both sides
        direct.generate(fresh_prompts(1), 8)
        for number in range(1, rounds + 1):
            user_input = fresh_prompts(1)[0]
            turn = asyncio.run(served_turn(server.url, user_input, tokens))
            batch = direct.generate([user_input], tokens)
            served_turns.append(turn)
            direct_rates.append(batch.tokens[0] / batch.seconds)
            same_text += turn.text == batch.texts[0]
            served_rate = turn.completion_tokens / turn.seconds
            rows.append(
                [
                    number,
                    f"{turn.completion_tokens} / {batch.tokens[0]}",
                    f"{served_rate:.1f}",
                    f"{direct_rates[-1]:.1f}",
                    ratio(served_rate, direct_rates[-1]),
                    f"{turn.first_token * 1000:.0f}",
                ]
            )
    header = ["round", "tokens served / direct", "served tok/s", "direct tok/s", "ratio"]
    print_table([*header, "served first token ms"], rows)
    served_rates = [t.completion_tokens / t.seconds for t in served_turns]
    served_rate, direct_rate = statistics.median(served_rates), statistics.median(direct_rates)
    summary: list[list[object]] = [
        [name, f"{ours:.1f}", f"{base:.1f}", ratio(ours, base)]
        for name, ours, base in (
            ("median tok/s", served_rate, direct_rate),
            ("best tok/s", max(served_rates), max(direct_rates)),
        )
    ]
    first_token = statistics.median(t.first_token for t in served_turns)
    summary.append(["median first token ms", f"{first_token * 1000:.0f}", "", ""])
    print_table(["", "served (HTTP, SSE)", "direct model.generate", "served / direct"], summary)
    met = served_rate / direct_rate >= TARGET
    print(f"same reply text as the baseline: {same_text}/{rounds} rounds")
    print(f"target served / direct tokens/s >= {TARGET}: {verdict(met)}")


if __name__ == "__main__":
    main()
