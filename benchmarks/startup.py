"""Server start time, cold (GGUF to safetensors) and warm (the cache exists).

    python benchmarks/startup.py [--runs 3] [--quick] [-- SERVE_ARGS]

Time from launching ``python -m chatstream.cli serve`` (bundled model) to its first ``/readyz``
200, polled every 20 ms. Cold: a fresh temporary ``CHATSTREAM_CACHE_DIR``, so the server
dequantizes the GGUF and writes the safetensors cache; warm: the same directory, now filled.
Baseline: the time of ``python -c "import torch, transformers"``. Target: warm <= 5 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import parser, print_machine, print_table, ratio, served, verdict

TARGET = 5.0


def import_time() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers"], check=True)
    return time.perf_counter() - started


def main() -> None:
    arguments = parser(__doc__, serves=True)
    arguments.add_argument("--runs", type=int, default=3, help="warm starts and baseline runs")
    args = arguments.parse_args()
    runs = 1 if args.quick else args.runs
    print_machine(f"startup: launch to /readyz 200, cold once, warm x{runs}")
    baseline = [import_time() for _ in range(runs)]
    with tempfile.TemporaryDirectory() as directory:
        env = {"CHATSTREAM_CACHE_DIR": str(Path(directory) / "smollm2")}
        with served(args.server_args, env) as server:
            cold = server.ready_after
        warm = []
        for _ in range(runs):
            with served(args.server_args, env) as server:
                warm.append(server.ready_after)
    base = statistics.median(baseline)
    rows: list[tuple[str, list[float]]] = [
        ('python -c "import torch, transformers" (baseline)', baseline),
        ("cold start (fresh cache directory)", [cold]),
        ("warm start (cache exists)", warm),
    ]
    print_table(
        ["launch to ready", "runs", "median s", "min s", "max s", "/ baseline"],
        [
            [
                name,
                len(times),
                f"{statistics.median(times):.2f}",
                f"{min(times):.2f}",
                f"{max(times):.2f}",
                ratio(statistics.median(times), base),
            ]
            for name, times in rows
        ],
    )
    print(f"target warm start <= {TARGET:.0f} s: {verdict(statistics.median(warm) <= TARGET)}")


if __name__ == "__main__":
    main()
