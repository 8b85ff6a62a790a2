"""`tactical-worker`: the headless daemon's command line. Every setting is a flag and a `TACTICAL_*` variable."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from worker.settings import SettingsError, WorkerSettings, setting_defaults
from worker.version import version_line

EXIT_CONFIG_ERROR = 2
EXIT_MODEL_ERROR = 3


class _VersionAction(argparse.Action):
    """`--version`, asking git only when it is given: argparse's own action wants the text when the parser is built,
    which every start of the worker does."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the release and commit and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version_line(parser.prog))  # to stdout, as argparse's own action does
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tactical-worker",
        description="Consume SYNERGY_DETECTED events from Redis, decide with three TorchScript agents, "
        "publish decisions and execution commands exactly once.",
        epilog="Flags override TACTICAL_* environment variables, which override the defaults. Redis TLS and "
        "credentials from files come from the environment only: TACTICAL_REDIS_TLS_CA, TACTICAL_REDIS_TLS_CERT, "
        "TACTICAL_REDIS_TLS_KEY, TACTICAL_REDIS_PASSWORD_FILE.",
    )  # each flag's help names its default itself: argparse's own would be None (unset: the env or the default)
    parser.add_argument("--version", action=_VersionAction)
    types = {f.name: f.type for f in fields(WorkerSettings)}
    for name, env, default, help_text in setting_defaults():
        declared = types[name]  # with postponed annotations, the type's source text; else the type itself
        kind = declared if isinstance(declared, str) else getattr(declared, "__name__", str(declared))
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type={"int": int, "float": float, "Path": Path}.get(kind, str),
            default=None,
            metavar=name.split("_")[-1].upper() if name != "http_addr" else "HOST:PORT",
            help=f"{help_text} [env {env}; default {default}]",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = WorkerSettings.from_env(**vars(args))
    except SettingsError as exc:
        print(f"tactical-worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    from models.bundle import BundleError
    from worker.connection import RedisAuthError
    from worker.heartbeat import ConsumerNameInUse
    from worker.http_server import HttpServerError
    from worker.service import Worker

    try:
        return Worker(settings).run()
    except BundleError as exc:
        logging.getLogger("tactical.worker").error("refusing to start: %s", exc)
        return EXIT_MODEL_ERROR
    except HttpServerError as exc:
        logging.getLogger("tactical.worker").error("cannot serve HTTP: %s", exc)
        return EXIT_CONFIG_ERROR
    except (RedisAuthError, ConsumerNameInUse) as exc:
        logging.getLogger("tactical.worker").error("exiting: %s", exc)
        return EXIT_CONFIG_ERROR
    except ValueError as exc:  # invalid aggregator or settings values
        logging.getLogger("tactical.worker").error("invalid configuration: %s", exc)
        return EXIT_CONFIG_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
