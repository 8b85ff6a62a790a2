"""`tacticalctl`: every runbook procedure as one command. Thin: parse, call the library, render."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, NoReturn

import redis
import typer
from typer.core import TyperGroup

from tacticalctl.context import (
    DEFAULT_REDIS_URL,
    DEFAULT_WORKER_URL,
    JSON_REQUESTED,
    CtlContext,
    json_documents_printed,
)
from tacticalctl.errors import REDIS_UNREACHABLE, CtlError, ExitCode
from tacticalctl.help_text import reflow_command
from worker.alerts import AuditTrailError
from worker.connection import refusal_advice
from worker.version import version_line

try:  # typer vendors click from 0.2x on; before, it used click itself
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment,import-not-found,no-redef]  # absent with a vendoring typer


@dataclass(frozen=True)
class LazyGroup:
    """A command group whose module imports torch (~1.5 s, ~200 MB): built only when one of its commands is asked
    for, so the checks a monitor or a container healthcheck runs every few seconds (health, lag, breaker, …) and
    `tacticalctl --help` do not pay it. `help` is what the command list shows for it (tested equal to its own)."""

    module: str
    help: str


LAZY_GROUPS = {
    "models": LazyGroup(
        "tacticalctl.models_cmd", "Model bundles: list, verify, compile, sign, promote, roll back, train, evaluate."
    ),
}


class _DeferredGroup(TyperGroup):
    """A lazy group as the command list shows it: its name and help, nothing imported. Anything more (running it,
    its own --help, completing its commands) builds the real group and hands over to it."""

    def __init__(self, name: str, build: Callable[[], TyperGroup]) -> None:
        super().__init__(name=name, help=LAZY_GROUPS[name].help)
        self._build = build

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def, override]
        return self._build().make_context(info_name, args, parent, **extra)

    def list_commands(self, ctx):  # type: ignore[no-untyped-def, override]
        return self._build().list_commands(ctx)

    def get_command(self, ctx, name):  # type: ignore[no-untyped-def, override]
        return self._build().get_command(ctx, name)


class CtlGroup(TyperGroup):
    """Turns a CtlError from any command into one line on stderr and its exit code, never a traceback; so is Redis
    going away in the middle of a command, or refusing one (CRITICAL, as unreachable from the start is). A command
    line that does not parse (an unknown option, a bad value) exits UNKNOWN: the check did not run, and a typo in a
    monitor's command must not page as CRITICAL (click's own code for it is 2)."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[no-untyped-def, override]
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            exc.exit_code = int(ExitCode.UNKNOWN)
            raise

    def list_commands(self, ctx):  # type: ignore[no-untyped-def, override]
        names = super().list_commands(ctx)
        return [*names, *(name for name in LAZY_GROUPS if name not in names)]

    def get_command(self, ctx, name):  # type: ignore[no-untyped-def, override]
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_GROUPS:
            return _DeferredGroup(name, lambda: self._build_lazy_group(name))
        if command is not None:
            reflow_command(command)
        return command

    def _build_lazy_group(self, name: str) -> TyperGroup:
        command = super().get_command(None, name)  # type: ignore[arg-type]  # built once, then an ordinary group
        if command is None:
            command = importlib.import_module(LAZY_GROUPS[name].module).command_group()
            self.add_command(command, name)
        reflow_command(command)
        return command  # type: ignore[return-value]

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def, override]
        # A guess before the command parses its arguments (a usage error comes first); `--json` itself corrects it
        # once parsed (context.JSON_REQUESTED).
        ctx.meta[JSON_REQUESTED] = "--json" in args
        ctx.meta[_DOCUMENTS_BEFORE] = json_documents_printed()
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except CtlError as exc:
            _fail(ctx, exc.message, exc.code)
        except UsageError as exc:
            exc.exit_code = int(ExitCode.UNKNOWN)
            if ctx.meta.get(JSON_REQUESTED):  # click says it on stderr; a script reading stdout gets it too
                _print_error_document(ExitCode.UNKNOWN, exc.format_message())
            raise
        # Said as they are: refused credentials name the user and the URL, never the secret; an audit trail of
        # another type says how to move it aside.
        except (redis.AuthenticationError, AuditTrailError) as exc:
            _fail(ctx, str(exc), ExitCode.CRITICAL)
        except REDIS_UNREACHABLE as exc:
            # The error names the address it failed on: `up` and `bench` run Redis of their own, not --redis-url.
            _fail(ctx, f"Redis unreachable: {exc}", ExitCode.CRITICAL)
        except redis.ResponseError as exc:  # e.g. NOPERM under an ACL user, WRONGTYPE on a key someone else wrote
            advice = refusal_advice(exc) or "see the Redis server's log"
            _fail(ctx, f"Redis refused a command: {exc}: {advice}", ExitCode.CRITICAL)


_DOCUMENTS_BEFORE = "tacticalctl.json_documents_before"


def _fail(ctx: typer.Context, message: str, code: ExitCode) -> NoReturn:
    """One line on stderr and the exit code; with `--json`, also one document on stdout — `{"status", "error"}` —
    so a script that parses stdout reads why, not nothing. Not after the command printed its own document (which
    says what failed); after the lines of a watch or a follow it is their last line."""
    typer.echo(f"tacticalctl: {message}", err=True)
    if ctx.meta.get(JSON_REQUESTED) and json_documents_printed() == ctx.meta.get(_DOCUMENTS_BEFORE, 0):
        _print_error_document(code, message)
    raise typer.Exit(int(code)) from None


def _print_error_document(code: ExitCode, message: str) -> None:
    """One line: a document of its own, and the last line of a JSON-lines watch."""
    sys.stdout.write(json.dumps({"status": code.status, "error": message}, sort_keys=True) + "\n")


app = typer.Typer(
    cls=CtlGroup,
    name="tacticalctl",
    help="Operate the tactical-marl worker: checks, health, lag, pending entries, keys, breaker, models, triage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line("tacticalctl"))
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    redis_url: Annotated[
        str, typer.Option("--redis-url", envvar="TACTICAL_REDIS_URL", help="Redis URL (database 2).")
    ] = DEFAULT_REDIS_URL,
    worker_url: Annotated[
        str, typer.Option("--worker-url", envvar="TACTICAL_WORKER_URL", help="The worker's HTTP endpoint.")
    ] = DEFAULT_WORKER_URL,
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print tacticalctl's release and commit, and exit.")] = False,
) -> None:
    ctx.obj = CtlContext(redis_url=redis_url, worker_url=worker_url.rstrip("/"))
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    from tacticalctl import alerts, breaker, dead_letter, feed, health, keys, lag, pending, stream, up

    feed.register(app)
    up.register(app)
    health.register(app)
    lag.register(app)
    stream.register(app)
    pending.register(app)
    dead_letter.register(app)
    keys.register(app)
    breaker.register(app)
    alerts.register(app)
    from tacticalctl import checklists, decision, duplicates, latency, triage

    checklists.register(app)
    latency.register(app)
    duplicates.register(app)
    decision.register(app)
    triage.register(app)
    from tacticalctl import bench

    bench.register(app)
    from tacticalctl import backup as backup_cmd

    backup_cmd.register(app)


_register()


def main() -> None:
    app(prog_name="tacticalctl")  # also under `python -m tacticalctl`, where click would make up another name
