"""``chatstream serve``: run the chat server (what ``make run`` does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from .config import ConfigError, Settings
from .logs import configure_logging

HELP = {
    "host": "interface to listen on",
    "port": "port to listen on",
    "redis_url": "shared Redis (redis://host:port/db); unset = embedded store, one process",
    "secret_key": "cookie signing key(s), comma-separated, newest first; required with Redis",
    "cookie_name": "name of the session cookie",
    "model": "Hugging Face id or local path (no downloads); 'mock' = the mock engine; "
    "unset = the bundled SmolLM2-135M-Instruct",
    "mock_token_delay": "seconds per token of the mock engine",
    "max_concurrent": "cluster-wide concurrent generations (default: the engine's slots)",
    "max_queue": "cluster-wide waiting requests before 429 queue_full",
    "queue_timeout": "seconds a request may wait before 503 queue_timeout",
    "lease_ttl": "seconds a crashed instance keeps its permits and session leases",
    "max_new_tokens": "default reply length cap, in tokens",
    "api_keys": "Bearer tokens the OpenAI-compatible /v1 routes require, comma-separated; "
    "unset = open",
    "prefill_tokens": "new prompt tokens per prefill pass of the batched engine: smaller gives "
    "a burst of requests their first tokens sooner, larger prefills more at once",
    "prefix_cache_mb": "MiB kept of recent prompts' and replies' KV cache, so a prompt that "
    "starts like one of them (system prompt, a conversation's earlier turns) skips that part; "
    "0 = off",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatstream", description="Streaming chat server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the chat server and web page",
        description="Run the chat server. Every flag defaults to its environment variable.",
    )
    for spec in fields(Settings):
        env = spec.metadata["env"]
        serve.add_argument(
            "--" + spec.name.replace("_", "-"),
            dest=spec.name,
            metavar=env,
            help=f"{HELP[spec.name]} (env {env}; default {spec.default!r})",
        )
    serve.add_argument("--log-level", default="info", help="uvicorn and chatstream log level")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object per line, with message ids and timings as fields",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        Settings.__dataclass_fields__[name].metadata["env"]: value
        for name, value in vars(args).items()
        if name in Settings.__dataclass_fields__ and value is not None
    }
    configure_logging(args.log_level, args.log_format)
    try:
        settings = Settings.from_env({**os.environ, **overrides})
        from .app import create_app

        app = create_app(settings)
    except ConfigError as exc:
        print(f"chatstream: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"chatstream: serving on http://{settings.host}:{settings.port}/", file=sys.stderr)
    # log_config=None: uvicorn's loggers go through the handler configured above.
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=args.log_level, log_config=None
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
