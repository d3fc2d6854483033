"""What the benchmark scripts share: the machine, percentiles, tables, a served chatstream, SSE
turns and the direct ``model.generate`` baseline.

The scripts import it as ``_harness``: ``python benchmarks/<script>.py`` puts this directory
first on ``sys.path``. Servers run as ``python -m chatstream.cli serve`` subprocesses with the
bundled model and the embedded store, unless a script's trailing arguments (after ``--``) say
otherwise; those arguments go to ``chatstream serve`` unchanged (``-- --redis-url URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from chatstream.engines.config import DTYPES
from chatstream.testing import ServerProcess, serve

SECRET_KEY = "chatstream-benchmark-secret-0123456789"  # 32+ bytes: fit for -- --redis-url
READY_TIMEOUT = 180.0

PROMPTS = (
    "Write a long, detailed essay about the history of the Roman Empire.",
    "Write a long, detailed essay about how airplanes fly.",
    "Write a long, detailed essay about the causes of ocean tides.",
    "Write a long, detailed essay about the water cycle.",
    "Write a long, detailed essay about the French Revolution.",
    "Write a long, detailed essay about photosynthesis in plants.",
    "Write a long, detailed essay about how volcanoes form.",
    "Write a long, detailed essay about the invention of the printing press.",
)
"""Distinct user turns that make SmolLM2 write far past the token counts benchmarked."""


def fresh_prompts(count: int) -> list[str]:
    """``count`` of :data:`PROMPTS` (in turn, again from the first past the last), each opened
    by a tag that no earlier request had, as new users' first turns: a server's prefix cache
    then holds only their chat template and system prompt tokens (and never a whole prompt
    sent by an earlier run)."""
    return [f"[{secrets.token_hex(3)}] {PROMPTS[i % len(PROMPTS)]}" for i in range(count)]


# -- reporting -------------------------------------------------------------------------------


def parser(
    description: str | None, *, serves: bool, runs_model: bool = False
) -> argparse.ArgumentParser:
    """A script's argument parser: ``--quick``; for scripts that run the model (here or in
    the servers they start), ``--device`` and ``--dtype``; for scripts that start servers, the
    ``chatstream serve`` arguments after ``--``."""
    parser = argparse.ArgumentParser(
        description=(description or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a short run, to try the script")
    if runs_model:
        parser.add_argument(
            "--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1... (cpu)"
        )
        parser.add_argument("--dtype", default="auto", choices=DTYPES, help="its weights (auto)")
    if serves:
        parser.add_argument(
            "server_args",
            nargs="*",
            metavar="-- SERVE_ARGS",
            help="passed on to `chatstream serve` (e.g. -- --redis-url redis://host/0)",
        )
    return parser


def print_machine(title: str) -> None:
    """The benchmark's title and what it runs on."""
    import torch
    import transformers

    usable = len(os.sched_getaffinity(0))
    print(f"## {title}")
    print(
        f"machine: {os.cpu_count()} CPUs ({usable} usable), torch threads "
        f"{torch.get_num_threads()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}, load average "
        f"{os.getloadavg()[0]:.2f}"
    )


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table, columns padded so it also reads as plain text."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    print(line(cells[0]))
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in cells[1:]:
        print(line(row))
    print()


def progress(*parts: object) -> None:
    """One line on stderr as a run ends, so that a long run shows how it goes."""
    print(*parts, file=sys.stderr, flush=True)


def percentile(samples: Sequence[float], cut: int) -> float:
    """The ``cut``-th percentile (1..99), interpolated between samples."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[cut - 1]


def median_range(samples: Sequence[float]) -> str:
    """``median (lowest-highest)`` of ratios, as the tables show them."""
    return f"{statistics.median(samples):.2f} ({min(samples):.2f}-{max(samples):.2f})"


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}" if baseline else "n/a"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# -- a served chatstream ---------------------------------------------------------------------


Server = ServerProcess


def placement_args(args: argparse.Namespace) -> list[str]:
    """The ``chatstream serve`` flags for the script's ``--device`` and ``--dtype``."""
    return ["--device", args.device, "--dtype", args.dtype]


@contextmanager
def served(
    server_args: Sequence[str] = (), env: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """``chatstream serve`` (bundled model, embedded store, 600 s queue timeout) on a free port,
    ready (``/readyz``: loaded and warmed up) when it yields; its log is shown if it fails to
    start."""
    # A long queue timeout: on a busy machine, 8 streams on one slot wait longer than 60 s.
    args = ["--log-level", "warning", "--queue-timeout", "600", *server_args]
    with serve(args, env=env, secret_key=SECRET_KEY, timeout=READY_TIMEOUT) as server:
        yield server


# -- chat turns over HTTP --------------------------------------------------------------------


@dataclass
class Turn:
    """One streamed reply, timed from sending the request."""

    text: str
    first_token: float
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    cached_tokens: int = 0


async def greedy_session(url: str, max_new_tokens: int) -> httpx.AsyncClient:
    """A client with its own session (cookie), set to greedy decoding of ``max_new_tokens``."""
    client = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600, connect=10))
    params = {"temperature": 0, "max_new_tokens": max_new_tokens}
    response = await client.post("/set_generation_params", json=params)
    response.raise_for_status()
    return client


async def chat_turn(client: httpx.AsyncClient, user_input: str) -> Turn:
    """``POST /chat_stream`` as server-sent events, read to the ``done`` event."""
    started = time.perf_counter()
    first_token = 0.0
    parts: list[str] = []
    event = ""
    headers = {"accept": "text/event-stream"}
    body = {"user_input": user_input}
    async with client.stream("POST", "/chat_stream", json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data: dict[str, Any] = json.loads(line.removeprefix("data: "))
                if event == "delta":
                    first_token = first_token or time.perf_counter() - started
                    parts.append(data["text"])
                elif event == "error":
                    raise RuntimeError(f"the stream failed: {data}")
                elif event == "done":
                    usage = data["usage"]
                    return Turn(
                        "".join(parts),
                        first_token,
                        time.perf_counter() - started,
                        usage["prompt_tokens"],
                        usage["completion_tokens"],
                        data["finish_reason"],
                        usage.get("cached_tokens", 0),
                    )
    raise RuntimeError("the stream ended without a done event")


async def concurrent_turns(url: str, prompts: Sequence[str], max_new_tokens: int) -> list[Turn]:
    """One turn per prompt, each in its own session, all sent at once."""
    clients = [await greedy_session(url, max_new_tokens) for _ in prompts]
    try:
        return list(
            await asyncio.gather(*(chat_turn(c, p) for c, p in zip(clients, prompts, strict=True)))
        )
    finally:
        for client in clients:
            await client.aclose()


# -- the direct baseline ---------------------------------------------------------------------


@dataclass
class Batch:
    """One static batch of ``model.generate``."""

    seconds: float
    texts: list[str]
    """Each reply without special tokens, as the server would stream it."""
    tokens: list[int]
    """Each reply's tokens up to and including its first end-of-turn token (as usage counts)."""


@dataclass
class Direct:
    """The bundled model in this process, prompted exactly as the server prompts it."""

    model: Any
    tokenizer: Any

    @classmethod
    def load(cls, device: str = "cpu", dtype: str = "auto") -> Direct:
        from transformers.utils import logging

        from chatstream.model import load_model

        logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        model, tokenizer = load_model(None, device=device, dtype=dtype)
        tokenizer.padding_side = "left"
        return cls(model, tokenizer)

    def render(self, user_input: str) -> str:
        """The prompt the server renders for a first turn of ``user_input`` (no system prompt)."""
        from chatstream.engines.rendering import ChatTemplateRenderer

        message = {"role": "user", "content": user_input}
        return ChatTemplateRenderer(self.tokenizer).render([message], add_generation_prompt=True)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> Batch:
        """Greedy ``model.generate`` of the left-padded batch of ``prompts``, timed from
        tokenizing to the last token."""
        import torch

        rendered = [self.render(prompt) for prompt in prompts]
        started = time.perf_counter()
        inputs = self.tokenizer(
            rendered, add_special_tokens=False, padding=True, return_tensors="pt"
        ).to(self.model.device)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            output = output.cpu()  # on a GPU: once it is done
        seconds = time.perf_counter() - started
        end = self.model.generation_config.eos_token_id
        replies: list[list[int]] = []
        for row in output[:, inputs["input_ids"].shape[1] :].tolist():
            replies.append(row[: row.index(end) + 1] if end in row else row)
        texts = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in replies]
        return Batch(seconds, texts, [len(ids) for ids in replies])
