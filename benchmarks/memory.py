"""Resident memory of the server with the bundled model, idle and under 8 streams.

    python benchmarks/memory.py [--tokens 64] [--quick] [-- SERVE_ARGS]

Reads ``VmRSS`` (resident now) and ``VmHWM`` (the peak since the process started) from
``/proc/<pid>/status`` of a ``chatstream serve --max-concurrent 8`` subprocess (bundled model):
right after ``/readyz`` answers, idle after one short reply, then every 50 ms while 8 greedy
streams of ``--tokens`` tokens run (each in its own session, all sent at once), and the peak
after them. Baseline: a bare Python process that only imports transformers and loads the same
model (float32, from the same safetensors cache), read the same way once loaded, and again
after one short greedy ``model.generate``: the weights are memory-mapped, so they become resident
only when the first forward pass reads them, in both processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

from _harness import (
    concurrent_turns,
    fresh_prompts,
    parser,
    print_machine,
    print_table,
    ratio,
    served,
)

STREAMS = 8
SAMPLE_INTERVAL = 0.05

BARE_LOAD = """
import sys
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True, dtype="float32")
loaded = open("/proc/self/status").read()
model.generate(**tokenizer("Hello", return_tensors="pt"), max_new_tokens=8, do_sample=False)
print(loaded + "\\0" + open("/proc/self/status").read())
"""
"""Prints ``/proc/self/status`` with the model loaded, a NUL, then the same after one generate."""


def memory_mib(status: str) -> dict[str, float]:
    """``VmRSS`` and ``VmHWM`` of a ``/proc/<pid>/status`` text, in MiB."""
    values = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(value.split()[0]) / 1024  # kB
    return values


def read_memory(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status") as status:
        return memory_mib(status.read())


def bare_model_memory() -> tuple[dict[str, float], dict[str, float]]:
    """A bare process's memory with the model loaded, then after one generation."""
    from chatstream.model import default_cache_dir

    command = [sys.executable, "-c", BARE_LOAD, str(default_cache_dir())]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    loaded, _, used = output.partition("\0")
    return memory_mib(loaded), memory_mib(used)


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--tokens", type=int, default=64, help="max_new_tokens per stream")
    args = arguments.parse_args()
    tokens = 16 if args.quick else args.tokens
    print_machine(f"memory: server RSS idle and under {STREAMS} streams of {tokens} tokens")
    bare_loaded, bare = bare_model_memory()
    with served(["--max-concurrent", str(STREAMS), *args.server_args]) as server:
        ready = read_memory(server.pid)
        asyncio.run(concurrent_turns(server.url, fresh_prompts(1), 8))
        idle = read_memory(server.pid)
        finished = threading.Event()
        samples = [idle["VmRSS"]]

        def sample() -> None:
            while not finished.wait(SAMPLE_INTERVAL):
                samples.append(read_memory(server.pid)["VmRSS"])

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            asyncio.run(concurrent_turns(server.url, fresh_prompts(STREAMS), tokens))
        finally:
            finished.set()
            sampler.join()
        loaded = read_memory(server.pid)
        highest = max(samples)
    rows = [
        ("bare process, model loaded", bare_loaded["VmRSS"], bare_loaded["VmHWM"]),
        ("bare process, after one generate (baseline)", bare["VmRSS"], bare["VmHWM"]),
        ("server just ready", ready["VmRSS"], ready["VmHWM"]),
        ("server idle after one reply", idle["VmRSS"], idle["VmHWM"]),
        (f"server under {STREAMS} streams (highest sample)", highest, loaded["VmHWM"]),
        ("server after the streams", loaded["VmRSS"], loaded["VmHWM"]),
    ]
    print_table(
        ["process", "VmRSS MiB", "VmHWM MiB (peak so far)", "VmRSS / baseline"],
        [
            [name, f"{rss:.0f}", f"{peak:.0f}", ratio(rss, bare["VmRSS"])]
            for name, rss, peak in rows
        ],
    )


if __name__ == "__main__":
    main()
