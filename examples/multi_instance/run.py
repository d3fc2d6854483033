"""Two chatstream instances sharing one Redis: the smallest multi-instance deployment.

    python examples/multi_instance/run.py [--model mock] [--redis-url redis://...]

Starts a private redis-server when no --redis-url / REDIS_URL is given, then two instances on
ports 8001 and 8002 with the same REDIS_URL and CHATSTREAM_SECRET_KEY. Put any load balancer in
front of them (or use either port directly: a conversation started on one continues on the
other, and the limit on concurrent generations holds across both). Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--model", default=os.environ.get("CHATSTREAM_MODEL", "mock"))
    parser.add_argument("--ports", default="8001,8002")
    parser.add_argument("--redis-port", type=int, default=6390)
    args = parser.parse_args(argv)

    processes: list[subprocess.Popen[bytes]] = []
    redis_url = args.redis_url
    if redis_url is None:
        if shutil.which("redis-server") is None:
            print("no --redis-url given and no redis-server on PATH", file=sys.stderr)
            return 2
        redis_command = [
            "redis-server",
            "--port",
            str(args.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        processes.append(subprocess.Popen(redis_command, stdout=subprocess.DEVNULL))
        redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
        time.sleep(0.5)
    secret_key = os.environ.get("CHATSTREAM_SECRET_KEY") or secrets.token_urlsafe(32)
    env = {**os.environ, "REDIS_URL": redis_url, "CHATSTREAM_SECRET_KEY": secret_key}
    ports = [int(port) for port in args.ports.split(",")]
    for port in ports:
        command = [
            sys.executable,
            "-m",
            "chatstream.cli",
            "serve",
            "--port",
            str(port),
            "--model",
            args.model,
        ]
        processes.append(subprocess.Popen(command, env=env))

    print(f"Redis: {redis_url}")
    for port in ports:
        print(f"instance: http://127.0.0.1:{port}/")
    print("Ctrl-C stops them all.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
