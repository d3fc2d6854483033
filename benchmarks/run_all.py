"""Every benchmark in this directory, one after another: what ``make bench`` runs.

    python benchmarks/run_all.py [--quick]

Each script runs in its own process (and process group), so one that crashes or hangs does not
hide the others; its tables print as it goes, and a summary of exit statuses and durations
follows. ``--quick`` is passed on to every script. Exits non-zero when any script failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 900.0
"""Seconds a script may run before its process group is killed."""


def scripts() -> list[Path]:
    """The benchmark scripts: every module here but this one and the shared ``_`` modules."""
    return sorted(p for p in HERE.glob("*.py") if p.name != "run_all.py" and p.name[0] != "_")


def run(script: Path, arguments: list[str]) -> str:
    """Run one script; its exit status, in words."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(script), *arguments]
    process = subprocess.Popen(command, env=environment, start_new_session=True)
    try:
        code = process.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"killed after {TIMEOUT:.0f} s"
    except KeyboardInterrupt:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise
    return "ok" if code == 0 else f"exit status {code}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run of every script")
    args = parser.parse_args()
    arguments = ["--quick"] if args.quick else []
    results: list[tuple[str, str, float]] = []
    for script in scripts():
        print(f"\n$ python benchmarks/{script.name} {' '.join(arguments)}".rstrip(), flush=True)
        started = time.perf_counter()
        status = run(script, arguments)
        results.append((script.name, status, time.perf_counter() - started))
    print("\n## summary")
    print("| script | result | seconds |\n|---|---|---|")
    for name, status, seconds in results:
        print(f"| {name} | {status} | {seconds:.0f} |")
    return 0 if all(status == "ok" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
