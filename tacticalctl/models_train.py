"""`tacticalctl models train | eval`: MAPPO training of the three agents, and their held-out evaluation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from models.bundle import BundleError, BundleWriteError, current_bundle_dir, read_manifest
from models.environment import EnvironmentConfig
from models.evaluation import (
    REGIMES,
    Evaluation,
    EvaluationError,
    HeldOutConfig,
    baseline_policies,
    bundle_policy,
    evaluate_policies,
    order_policies,
    recorded_settings,
    write_report,
)
from models.mappo import (
    TRAINING_KIND,
    MappoConfig,
    MappoError,
    ProgressReport,
    TrainingResult,
    describe_training,
    train,
)
from models.promotion import PromotionError, PromotionRefusedError, promote_if_better
from tacticalctl.context import JsonOption, get_context, print_json
from tacticalctl.errors import CtlError, ExitCode
from tacticalctl.results import ModelsDirOption, default_models
from worker.alerts import AuditTrailError, require_audit_trail

CsvOption = Annotated[
    list[Path] | None,
    typer.Option("--csv", exists=True, dir_okay=False, readable=True,
                 help="Bars CSV (timestamp,open,high,low,close,volume); repeatable. Training uses the bars before "
                 "its held-out slice, evaluation the slice."),
]
SeedsOption = Annotated[
    str | None, typer.Option("--held-out-seeds", help="Comma-separated simulator seeds of the held-out markets.")
]
RegimesOption = Annotated[
    str | None,
    typer.Option("--regimes", help=f"Comma-separated held-out simulator regimes, of: {', '.join(REGIMES)}."),
]
HoldoutFractionOption = Annotated[
    float | None, typer.Option("--csv-holdout-fraction", min=0.01, max=0.99, help="Share of each CSV held out.")
]


def _seeds(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise CtlError(f"{option} {text!r}: expected comma-separated integers, e.g. 301,302",
                       ExitCode.UNKNOWN) from None


def _held_out(
    base: HeldOutConfig, seeds: str | None, regimes: str | None, csv: list[Path] | None, fraction: float | None
) -> HeldOutConfig:
    try:
        return HeldOutConfig(
            seeds=base.seeds if seeds is None else _seeds(seeds, "--held-out-seeds"),
            regimes=base.regimes if regimes is None else tuple(r.strip() for r in regimes.split(",") if r.strip()),
            n_bars=base.n_bars,
            csv=tuple(csv) if csv else base.csv,
            csv_holdout_fraction=fraction if fraction is not None else base.csv_holdout_fraction,
            random_seed=base.random_seed,
        )
    except EvaluationError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None


def _figures_table(evaluation: Evaluation, title: str) -> Table:
    table = Table(title=title)
    for column in ("policy", "PnL (points)", "Sharpe", "accuracy", "max drawdown", "execution rate", "trades"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for name in order_policies(evaluation.results):
        r = evaluation.results[name]
        table.add_row(name, f"{r.pnl:.1f}", f"{r.sharpe:.2f}", "n/a" if r.accuracy is None else f"{r.accuracy:.3f}",
                      f"{r.max_drawdown:.1f}", f"{r.execution_rate:.3f}", str(r.trades))
    return table


def _verdict_line(evaluation: Evaluation) -> str:
    beats = evaluation.beats("marl")
    losing = [name for name, won in beats.items() if not won]
    if not losing:
        return "[green]marl beats every baseline on PnL and Sharpe[/]"
    return f"[bold red]marl does not beat {', '.join(losing)} on both PnL and Sharpe[/]"


def train_command(
    ctx: typer.Context,
    seed: Annotated[int, typer.Option(help="Seed of sampling, minibatch order and lane starts.")] = MappoConfig.seed,
    iterations: Annotated[int, typer.Option(min=1, help="PPO iterations (rollout + update). More trains longer; "
                                            "with --resume a finished run continues.")] = MappoConfig.iterations,
    initial_bundle: Annotated[str | None, typer.Option(help="Supervised bundle to start from (default: CURRENT, or "
                                                       "the supervised bundle CURRENT was trained from when MAPPO "
                                                       "made it).")]
    = None,
    train_seeds: Annotated[str | None, typer.Option(help="Comma-separated simulator seeds to train on; '' for "
                                                    "none (train on --csv only).")] = None,
    validation_seeds: Annotated[str | None, typer.Option(help="Comma-separated simulator seeds that pick the best "
                                                         "iterate; '' for none (keep the last).")] = None,
    n_bars: Annotated[int, typer.Option(min=500, help="Bars per simulated market.")] = MappoConfig.n_bars,
    csv: CsvOption = None,
    csv_holdout_fraction: HoldoutFractionOption = None,
    held_out_seeds: SeedsOption = None,
    regimes: RegimesOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from this configuration's checkpoint.")] = False,
    checkpoint_dir: Annotated[Path | None, typer.Option(file_okay=False, help="Where checkpoints go (default: "
                                                        "~/.cache/tactical-marl/mappo).")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make the new bundle CURRENT if it beats CURRENT on "
                                          "held-out evaluation (audited).")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --promote: promote even if it does not beat CURRENT "
                                        "(audited as forced).")] = False,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Train the three agents together with MAPPO from a supervised bundle, evaluate the result on held-out
    markets against hold / random / rule_fvg / supervised, and write a new bundle with its report. CURRENT changes
    only with --promote, and only when the new bundle wins (or --force).

    Exit 0 trained (and, with --promote, promoted); 1 trained, but the promotion gate refused the bundle (it stays,
    CURRENT does not change); 2 the promotion could not run (another one running, the audit trail).

    JSON keys: version, bundle_dir, report, best_iteration, policies, beats, promoted, promotion (with --promote:
    previous, version, forced, audit_id, verdict), refused (why it was not promoted)."""
    if force and not promote:
        raise CtlError("--force only makes sense with --promote", ExitCode.UNKNOWN)
    directory = models_dir or default_models()
    base = HeldOutConfig()
    held_out = _held_out(base, held_out_seeds, regimes, csv, csv_holdout_fraction)
    defaults = MappoConfig(out=directory)
    try:
        config = MappoConfig(
            out=directory,
            initial_bundle=initial_bundle,
            seed=seed,
            iterations=iterations,
            train_seeds=defaults.train_seeds if train_seeds is None else _seeds(train_seeds, "--train-seeds"),
            validation_seeds=defaults.validation_seeds if validation_seeds is None
            else _seeds(validation_seeds, "--validation-seeds"),
            n_bars=n_bars,
            csv=held_out.csv,
            checkpoint_dir=checkpoint_dir,
            held_out=held_out,
        )
    except MappoError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    context = get_context(ctx)
    client = context.redis() if promote else None  # the audit trail must be reachable before hours of work
    if client is not None:
        require_audit_trail(client)  # and writable: a promotion with no audit entry is refused after the work
    result = _run_training(config, resume, context.console, quiet=json_output)

    promotion = None
    refused = None
    failed = False
    if promote:
        try:
            promotion = promote_if_better(directory, result.bundle_dir.name, force=force, client=client,
                                          held_out=held_out)
        except PromotionRefusedError as exc:
            refused = str(exc)
        except (PromotionError, BundleError, AuditTrailError) as exc:  # not compared: said after the results
            refused, failed = f"promotion failed: {exc}", True
    if json_output:
        print_json({
            "version": result.bundle_dir.name,
            "bundle_dir": str(result.bundle_dir),
            "report": str(result.report),
            "best_iteration": result.trained.best_iteration,
            **result.evaluation.as_json(),
            "beats": result.beats_baselines,
            "promoted": promotion is not None,
            "promotion": promotion.as_dict() if promotion else None,
            "refused": refused,
        })
        if refused:
            raise typer.Exit(int(ExitCode.CRITICAL if failed else ExitCode.WARNING))
        return
    console = context.console
    console.print(_figures_table(result.evaluation, f"held-out evaluation of {result.bundle_dir.name}"))
    console.print(_verdict_line(result.evaluation))
    console.print(f"bundle {result.bundle_dir} (best validation iterate {result.trained.best_iteration}); "
                  f"report {result.report}")
    if promotion is not None:
        console.print(f"CURRENT {promotion.previous or '(none)'} → [bold]{promotion.version}[/]"
                      + (" [bold red](forced)[/]" if promotion.forced else "") + f": {promotion.verdict.reason}")
    elif refused:
        console.print(f"[yellow]not promoted[/]: {refused}")
        # As `models promote` tells a refusal coming (a dry run's exit 1): `train --promote && deploy` must not go on.
        raise typer.Exit(int(ExitCode.CRITICAL if failed else ExitCode.WARNING))
    else:
        console.print(f"judge it (a dry run): tacticalctl models promote {result.bundle_dir.name}; promote it: "
                      f"tacticalctl models promote {result.bundle_dir.name} --yes")


def _run_training(config: MappoConfig, resume: bool, console: Console, *, quiet: bool) -> TrainingResult:
    try:
        if quiet:
            return train(config, resume=resume)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[figures]}"))
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("MAPPO", total=config.iterations, figures="")

            def show(report: ProgressReport) -> None:
                if report.iteration is None:
                    bar.console.print(report.message)
                    return
                figures = report.figures
                text = f"reward/event {figures.get('reward_per_event', 0.0):.3f}"
                if "validation_reward" in figures:
                    text += f" · validation {figures['validation_reward']:.1f} R"
                bar.update(task, completed=report.iteration, figures=text)

            return train(config, resume=resume, progress=show)
    except MappoError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    except BundleWriteError as exc:
        raise CtlError(f"trained, but {exc}; free the space or fix the permissions, then run the same command with "
                       "--resume (from the last checkpoint)", ExitCode.UNKNOWN) from None
    except BundleError as exc:
        raise CtlError(f"cannot train: {exc}", ExitCode.UNKNOWN) from None
    except KeyboardInterrupt:
        raise CtlError(f"interrupted: a checkpoint is written every {config.checkpoint_every} iterations; run the "
                       "same command with --resume to continue", ExitCode.UNKNOWN) from None


def eval_command(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="MAPPO bundle to evaluate (default: CURRENT).",
                                                  show_default=False)] = None,
    supervised: Annotated[str | None, typer.Option(help="Supervised bundle to compare with (default: the one the "
                                                   "bundle was trained from).")] = None,
    csv: CsvOption = None,
    csv_holdout_fraction: HoldoutFractionOption = None,
    held_out_seeds: SeedsOption = None,
    regimes: RegimesOption = None,
    report_dir: Annotated[Path | None, typer.Option(file_okay=False, help="Where report.md and its plots go "
                                                    "(default: a new <bundle>/evaluation/runs/<UTC time>: the report "
                                                    "training wrote stays the bundle's record).")] = None,
    models_dir: ModelsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Evaluate a MAPPO bundle and the baselines (hold, random, rule_fvg, supervised) on held-out markets — by
    default the ones its manifest records — through the worker's vote, and write a markdown report with plots.

    JSON: {"policies": {name: {pnl, sharpe, accuracy, max_drawdown, execution_rate}}, "report": path}; accuracy
    is null where a policy never leans (hold)."""
    directory = models_dir or default_models()
    try:
        bundle_dir = directory / version if version else current_bundle_dir(directory)
        manifest = read_manifest(bundle_dir)
    except BundleError as exc:
        raise CtlError(str(exc), ExitCode.UNKNOWN) from None
    if manifest.training.get("kind") != TRAINING_KIND:
        raise CtlError(f"bundle {manifest.version} is a supervised pre-training, not a MAPPO bundle: name one "
                       "(tacticalctl models list) or train one (tacticalctl models train)", ExitCode.UNKNOWN)
    supervised_version = supervised or manifest.training.get("initial_bundle")
    if not supervised_version:
        raise CtlError(f"bundle {manifest.version} does not name its supervised bundle: pass --supervised VERSION",
                       ExitCode.UNKNOWN)
    try:
        recorded_held_out, environment = recorded_settings(manifest.metrics)
    except (EvaluationError, ValueError) as exc:
        raise CtlError(f"bundle {manifest.version}: {exc}", ExitCode.UNKNOWN) from None
    held_out = _held_out(recorded_held_out, held_out_seeds, regimes, csv, csv_holdout_fraction)
    console = get_context(ctx).console
    try:
        if json_output:
            evaluation = _evaluate(bundle_dir, directory / supervised_version, held_out, environment)
        else:
            with console.status(f"evaluating {manifest.version} and the baselines on held-out markets…"):
                evaluation = _evaluate(bundle_dir, directory / supervised_version, held_out, environment)
    except (BundleError, EvaluationError) as exc:
        raise CtlError(f"cannot evaluate: {exc}", ExitCode.UNKNOWN) from None
    # Never over the report training wrote: it goes with the manifest's figures, and a re-run on other data (--csv,
    # --held-out-seeds) or without matplotlib would replace it with something else.
    target = report_dir or bundle_dir / "evaluation" / "runs" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        note = (describe_training(manifest.training) if supervised_version == manifest.training.get("initial_bundle")
                else f"Supervised baseline: bundle {supervised_version}.")
        report = write_report(evaluation, target, title=f"Held-out evaluation of bundle {manifest.version}",
                              notes=[note])
    except OSError as exc:
        raise CtlError(f"cannot write the report to {target}: {exc}; pass --report-dir", ExitCode.UNKNOWN) from None
    if json_output:
        print_json({**evaluation.as_json(), "report": str(report)})
        return
    console.print(_figures_table(evaluation, f"held-out evaluation of {manifest.version} "
                                 f"({evaluation.held_out['events']} events)"))
    console.print(_verdict_line(evaluation))
    console.print(f"report: {report}")


def _evaluate(bundle_dir: Path, supervised_dir: Path, held_out: HeldOutConfig,
              environment: EnvironmentConfig) -> Evaluation:
    policies = [bundle_policy("marl", bundle_dir), *baseline_policies(held_out.random_seed),
                bundle_policy("supervised", supervised_dir)]
    return evaluate_policies(policies, held_out, environment)


def register(models_app: typer.Typer | None = None) -> None:
    """Add `train` and `eval` to the `models` command group (idempotent)."""
    if models_app is None:
        from tacticalctl.models_cmd import models_app as shared_group

        models_app = shared_group
    present = {command.name for command in models_app.registered_commands}
    if "train" not in present:
        models_app.command("train")(train_command)
    if "eval" not in present:
        models_app.command("eval")(eval_command)
