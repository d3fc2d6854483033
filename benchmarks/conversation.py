"""A long conversation through the HTTP endpoint: time to first token, turn by turn, with the
engine's prefix cache (the default) next to the same server without it.

    python benchmarks/conversation.py [--turns 8] [--tokens 48] [--quick] [-- SERVE_ARGS]

Two ``chatstream serve`` subprocesses (bundled model, default engine): one as configured, the
baseline with ``--prefix-cache-mb 0``. Each holds the same conversation in one session, greedy,
``max_new_tokens`` fixed: every turn's prompt repeats the whole history, so without a cache the
prefill grows with it. The servers take turns (they share the CPU), one turn each, so both see
the same history length at once. Time to first token is from sending the request to the first
``delta``; ``cached`` is the ``done`` event's ``usage.cached_tokens``. No target: the figure
shows how the first token's wait grows with the history.
"""

from __future__ import annotations

import asyncio
import statistics

import httpx
from _harness import (
    Turn,
    chat_turn,
    greedy_session,
    parser,
    print_machine,
    print_table,
    ratio,
    served,
)

QUESTIONS = (
    "Tell me about the history of the Roman Empire.",
    "What happened to its western half?",
    "And the eastern half?",
    "Who was its most famous emperor?",
    "What did he build?",
    "How did the empire's roads work?",
    "What language did people speak there?",
    "How is that language used today?",
    "Which modern countries were part of it?",
    "Summarize our conversation in two sentences.",
)


async def conversation(
    urls: list[str], turns: int, tokens: int, questions: tuple[str, ...] = QUESTIONS
) -> list[list[Turn]]:
    """The same conversation on each server, turn by turn; each server's turns."""
    clients: list[httpx.AsyncClient] = [await greedy_session(url, tokens) for url in urls]
    results: list[list[Turn]] = [[] for _ in urls]
    try:
        for number in range(turns):
            question = questions[number % len(questions)]
            for client, result in zip(clients, results, strict=True):
                result.append(await chat_turn(client, question))
    finally:
        for client in clients:
            await client.aclose()
    return results


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--turns", type=int, default=8, help="turns of the conversation")
    arguments.add_argument("--tokens", type=int, default=48, help="max_new_tokens per reply")
    args = arguments.parse_args()
    turns, tokens = (3, 16) if args.quick else (args.turns, args.tokens)
    print_machine(f"conversation: {turns} turns of {tokens} tokens, prefix cache on and off")
    with (
        served(args.server_args) as cached_server,
        served([*args.server_args, "--prefix-cache-mb", "0"]) as plain_server,
    ):
        urls = [cached_server.url, plain_server.url]
        asyncio.run(conversation(urls, 1, 4, ("Hello!",)))  # warm-up, with another question
        cached, plain = asyncio.run(conversation(urls, turns, tokens))
    rows: list[list[object]] = []
    for number, (ours, base) in enumerate(zip(cached, plain, strict=True), start=1):
        rows.append(
            [
                number,
                ours.prompt_tokens,
                ours.cached_tokens,
                f"{ours.first_token * 1000:.0f}",
                f"{base.first_token * 1000:.0f}",
                ratio(ours.first_token, base.first_token),
                "yes" if ours.text == base.text else "no",
            ]
        )
    print_table(
        [
            "turn",
            "prompt tokens",
            "cached",
            "TTFT ms, prefix cache",
            "TTFT ms, no cache",
            "ratio",
            "same reply",
        ],
        rows,
    )
    later = slice(1, None)
    mean_ours = statistics.mean(t.first_token for t in cached[later])
    mean_base = statistics.mean(t.first_token for t in plain[later])
    print(
        f"turns 2..{turns}: mean TTFT {mean_ours * 1000:.0f} ms with the prefix cache, "
        f"{mean_base * 1000:.0f} ms without ({ratio(mean_ours, mean_base)})"
    )


if __name__ == "__main__":
    main()
