"""`tacticalctl keys list | clean`: the idempotency keys, their age, TTL and owner; cleaning the stale ones."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tacticalctl.context import JsonOption, get_context, print_json, worker_settings
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.formatting import age, audit_not_written, parse_duration, plain
from worker.alerts import default_actor
from worker.ops.keys import (
    IdempotencyKey,
    KeyCleanupResult,
    KeyKind,
    clean_keys,
    plan_key_cleanup,
    require_cleanable_age,
    scan_idempotency_keys,
)

keys_app = typer.Typer(help="Idempotency keys: tactical:processing:* and tactical:completed:*.", no_args_is_help=True)



class KindChoice(StrEnum):
    ALL = "all"
    PROCESSING = "processing"
    COMPLETED = "completed"

    @property
    def kinds(self) -> tuple[KeyKind, ...]:
        return tuple(KeyKind) if self is KindChoice.ALL else (KeyKind(self.value),)


def _completed_ttl_s() -> float:
    """The TTL completed keys are written with (TACTICAL_COMPLETED_TTL_S): ages of keys whose value is no
    decision id come from it."""
    return float(worker_settings().completed_ttl_s)


def keys_table(keys: Sequence[IdempotencyKey], title: str) -> Table:
    table = Table(title=title, expand=False)
    for column in ("kind", "correlation id", "age", "ttl", "owner", "entry"):
        table.add_column(column, overflow="fold")
    for key in keys:
        if key.kind is KeyKind.PROCESSING:
            owner = f"{plain(key.owner or '(unreadable)')} " + ("[green](alive)[/]" if key.owner_alive
                                                          else "[bold red](gone)[/]")
        else:
            owner = "-"
        table.add_row(key.kind.value, plain(key.correlation_id), age(key.age_s),
                      "no expiry" if key.ttl_s is None else age(key.ttl_s), owner, plain(key.entry_id or "-"))
    return table


@keys_app.command("list")
def list_(
    ctx: typer.Context,
    kind: Annotated[KindChoice, typer.Option(help="Which keys.")] = KindChoice.ALL,
    limit: Annotated[int, typer.Option(help="At most this many keys of each kind.", min=1)] = 1000,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when stale processing keys exist.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Processing and completed keys with age, TTL and owner (SCAN, never KEYS).

    A processing key is stale when its owner has no live heartbeat: `tacticalctl keys clean` removes those.

    At most --limit keys of each kind are read (in SCAN's order, then shown oldest first): when more exist, the
    counts say "at least" and `more` names the kinds cut short.

    With --check: exit 0 when no processing key is stale, 1 when some are (morning check, step 7).
    JSON keys: keys [{key, kind, correlation_id, age_s, ttl_s, owner, owner_alive, entry_id, stale}],
    processing, completed, stale_processing, more (kinds with more keys than --limit)."""
    context = get_context(ctx)
    # One more than the limit of each kind: whether there are more is worth saying, and costs one key.
    scanned = scan_idempotency_keys(context.redis(), kind.kinds, limit=limit + 1, completed_ttl_s=_completed_ttl_s())
    keys: list[IdempotencyKey] = []
    more: list[str] = []
    for each in kind.kinds:
        of_kind = [k for k in scanned if k.kind is each]
        if len(of_kind) > limit:
            more.append(each.value)
            of_kind = of_kind[:limit]  # oldest first among those read
        keys.extend(of_kind)
    stale = [k for k in keys if k.stale]
    processing = sum(k.kind is KeyKind.PROCESSING for k in keys)
    if json_output:
        print_json({"keys": [k.as_dict() for k in keys], "processing": processing,
                    "completed": len(keys) - processing, "stale_processing": len(stale), "more": more})
    else:
        console = context.console
        if keys:
            counts = ", ".join(f"{'at least ' if each.value in more else ''}{sum(k.kind is each for k in keys)} "
                               f"{each.value}" for each in kind.kinds)
            console.print(keys_table(keys, counts))
            if more:
                console.print(f"[yellow]more {' and '.join(more)} keys than --limit {limit}[/]: the first found "
                              "are shown, not necessarily the oldest; raise --limit to see more")
        else:
            only = f" {kind.kinds[0].value}" if len(kind.kinds) == 1 else ""
            console.print(f"no{only} idempotency keys")  # --kind processing: none in flight, not "none at all"
        if stale:
            console.print(f"[yellow]{len(stale)} stale processing keys[/] (owner gone): "
                          "`tacticalctl keys clean` shows and removes them")
    if check and stale:
        raise typer.Exit(int(ExitCode.WARNING))


@keys_app.command("clean")
def clean(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option(
        help="Completed keys older than this go (e.g. 24h, 90m, 2d; at least 15m).")] = "24h",
    yes: Annotated[bool, typer.Option("--yes", help="Delete. Without it, only show what would be deleted.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete stale processing keys (owner gone) and completed keys older than --older-than.

    A key is deleted only if it still holds the value listed (a key re-taken meanwhile is left alone). Shows what
    it would do; acts only with --yes (audited in tactical_alerts).

    JSON keys: older_than_s, stale_processing, old_completed (key objects as in `keys list`), applied, deleted,
    skipped, audit_id, audit_error. Exit 1 when the keys were deleted but Redis refused their audit entry (at
    maxmemory it takes DEL, not XADD): the output says which went."""
    try:
        older_than_s = parse_duration(older_than)
        require_cleanable_age(older_than_s)
    except ValueError as exc:
        raise CtlError(f"--older-than: {exc}", ExitCode.UNKNOWN) from None
    context = get_context(ctx)
    client = context.redis()
    plan = plan_key_cleanup(scan_idempotency_keys(client, completed_ttl_s=_completed_ttl_s()),
                            older_than_s=older_than_s)
    result = clean_keys(client, plan, actor=default_actor(), apply=yes)
    if json_output:
        print_json(result.as_dict())
    else:
        _print_clean(context.console, result, older_than)
    if result.audit_error:
        raise typer.Exit(int(ExitCode.WARNING))


def _print_clean(console: Console, result: KeyCleanupResult, older_than: str) -> None:
    plan = result.plan
    if not plan.keys:
        console.print(f"nothing to clean: no stale processing keys, no completed keys older than {older_than}")
        return
    console.print(keys_table(plan.keys, f"{len(plan.stale_processing)} stale processing keys, "
                                        f"{len(plan.old_completed)} completed keys older than {older_than}"))
    if not result.applied:
        console.print(f"dry run: nothing deleted. Add --yes to delete these {len(plan.keys)} keys.")
        return
    console.print(f"deleted {len(result.deleted)} keys; audit entry {result.audit_id or '-'}")
    if result.audit_error:
        console.print(audit_not_written(result.audit_error, "deletion"))
    if result.skipped:
        console.print(f"left alone (changed or expired meanwhile): {plain(', '.join(result.skipped))}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
