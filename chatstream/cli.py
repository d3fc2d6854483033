"""``chatstream serve``: run the chat server (what ``make run`` does)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

from .logs import configure_logging
from .settings import ConfigError, Settings, env_name


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
        flag = "--" + spec.name.replace("_", "-")
        text = f"{spec.metadata['help']} (env {env}; default {spec.default!r})"
        if spec.type == "bool":  # a switch that turns the default over: --docs, --no-record-...
            if spec.default:
                flag = "--no-" + spec.name.replace("_", "-")
            value = "0" if spec.default else "1"
            serve.add_argument(flag, dest=spec.name, action="store_const", const=value, help=text)
        else:
            serve.add_argument(flag, dest=spec.name, metavar=env, help=text)
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
        env_name(name): value
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
    from .server import run

    print(f"chatstream: serving on http://{settings.host}:{settings.port}/", file=sys.stderr)
    run(
        app,
        host=settings.host,
        port=settings.port,
        limits=settings.server_limits,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
