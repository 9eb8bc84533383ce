"""The ``rlbound`` command: subcommands only; the work happens in the library modules.

Errors a user can fix are printed as one line (``rlbound: …``) with exit status 2; ``--debug``
shows the traceback instead. ``--quiet`` hides progress bars.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rlbound.errors import RlboundError
from rlbound.progress import set_quiet

app = typer.Typer(
    help=(
        "rlbound: did RL give your model new reasoning, or only sharpen what the base model "
        "could already sample?\n\n"
        "Start with `rlbound study --out runs/study` (a small built-in study on CPU, no downloads),\n"
        "then `rlbound sample` your own models on a benchmark file and `rlbound report` them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    set_quiet(quiet)
    _state["debug"] = debug


def _parse_value(text: str):
    """Task option values: JSON scalars where they parse (3, 0.5, true, null), else strings."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _task_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise RlboundError(f"task option {pair!r} must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _parse_value(value)
    return options


def _build_task(task: str, options: dict):
    from rlbound.tasks.base import load_task

    if task not in ("file",) and Path(task).suffix in (".jsonl", ".json", ".parquet", ".gz"):
        options = {"path": task, **options}
        task = "file"
    try:
        return load_task(task, **options)
    except TypeError as exc:
        raise RlboundError(f"task {task!r}: {exc}") from None


@app.command()
def sample(
    task: str = typer.Option(..., "--task", "-t", help="Task name (`rlbound list`) or a JSONL/JSON/Parquet file."),
    model: str = typer.Option(..., "--model", "-m", help="Model directory, .gguf file or hub name."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created, or resumed if it exists)."),
    engine: str = typer.Option("hf", "--engine", "-e", help="Engine: tiny, hf."),
    n: int = typer.Option(16, "--n", "-n", help="Samples per problem."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 = off)."),
    top_k: int = typer.Option(0, help="Top-k filter (0 = off)."),
    max_tokens: int = typer.Option(512, help="Maximum new tokens per completion."),
    stop: List[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    seed: int = typer.Option(0, help="Run seed; each sample's seed derives from it."),
    template: Optional[str] = typer.Option(None, help="Prompt template (default: the task's)."),
    verifier: Optional[str] = typer.Option(None, help="Verifier (default: the task's)."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="KEY=VALUE for the task (repeatable), e.g. -O limit=50."),
    label: Optional[str] = typer.Option(None, help="Name of this run in reports (default: the directory name)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows decoded together by the engine."),
    device: str = typer.Option("cpu", help="Torch device for the tiny and hf engines."),
    verify_timeout: float = typer.Option(5.0, help="Hard limit in seconds per verification."),
) -> None:
    """Sample N completions per problem, verify them, and store them in a run directory.

    Rerunning the same command after an interruption fills only the missing samples; a larger
    -n tops the run up.
    """
    from rlbound.engines.base import SamplingParams, load_engine
    from rlbound.sampler import sample_run
    from rlbound.verify.base import load_verifier

    if n < 1:
        raise RlboundError(f"--n must be >= 1, got {n}")
    params = SamplingParams(
        temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, stop=tuple(stop)
    )
    the_task = _build_task(task, _task_options(task_option))
    the_verifier = load_verifier(verifier or the_task.verifier)
    engine_options = {"device": device}
    if batch_size:
        engine_options["batch_size"] = batch_size
    the_engine = load_engine(engine, model, **engine_options)
    stats = sample_run(
        out, the_task, the_engine, the_verifier, params, n, seed=seed, template=template,
        label=label, verify_timeout_s=verify_timeout,
    )
    typer.echo(
        f"{stats.path}: {stats.sampled} samples added, {stats.already_present} already present"
        + (f", {stats.timeouts} verifier timeouts" if stats.timeouts else "")
    )


def _load_runs(runs: list[Path]):
    from rlbound.store import load_run

    if not runs:
        raise RlboundError("give at least one run directory")
    loaded = [load_run(r).samples for r in runs]
    for run, samples in zip(runs, loaded):
        if len(samples) == 0:
            raise RlboundError(f"run '{run}' holds no samples yet")
    return loaded


@app.command()
def passk(
    runs: List[Path] = typer.Argument(..., help="Run directories."),
    k: List[int] = typer.Option([], "--k", "-k", help="Extra k to report (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> None:
    """pass@k (unbiased estimator, bootstrap 95% CI over problems) of each run."""
    from rlbound.report.html import passk_rows

    rows = passk_rows(_load_runs(runs), extra_ks=tuple(k))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pass@k (95% bootstrap CI over problems)")
    for col in ("run", "k", "pass@k", "95% CI", "problems"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in rows:
        table.add_row(
            str(row["run"]), str(row["k"]), f"{row['mean']:.4f}",
            f"[{row['lo']:.4f}, {row['hi']:.4f}]", str(row["problems"]),
        )
    Console().print(table)


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="Run directories; the first is the reference (e.g. the base model)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.html, results.json and CSV."),
    k: List[int] = typer.Option([], "--k", "-k", help="Extra k to report (repeatable)."),
    title: Optional[str] = typer.Option(None, help="Report title."),
) -> None:
    """Write report.html (pass@k curves with bands, histograms, tables), results.json and CSV."""
    from rlbound.report.html import write_report

    path = write_report(_load_runs(runs), out, extra_ks=tuple(k), title=title)
    typer.echo(f"report: {path}")


@app.command("fit-tiny")
def fit_tiny(
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    difficulty: int = typer.Option(3, help="Arithmetic difficulty (operations per problem)."),
    steps: int = typer.Option(450, help="Optimiser steps (450: about 2 minutes on 2 cores)."),
    seed: int = typer.Option(0, help="Training seed."),
) -> None:
    """Train the built-in tiny transformer on arithmetic solution traces (CPU, about 2 minutes)."""
    from rlbound.engines.tiny.train import fit_arithmetic_model

    fit = fit_arithmetic_model(out, difficulty=difficulty, steps=steps, seed=seed)
    accuracy = ", ".join(f"{mode} {value:.3f}" for mode, value in fit.accuracy.items())
    typer.echo(f"model: {out} (trained in {fit.wall_s:.0f} s; held-out pass@1: {accuracy})")


@app.command()
def study(
    out: Path = typer.Option(Path("runs/study"), "--out", "-o", help="Study directory (resumable)."),
    quick: bool = typer.Option(False, help="A smaller study (for tests and a first look)."),
) -> None:
    """The built-in study: a base model, a self-trained (sharpened) one, pass@k of both, a report."""
    from rlbound.study import run_study

    path = run_study(out, quick=quick)
    typer.echo(f"report: {path}")


@app.command("list")
def list_components() -> None:
    """Tasks, engines, verifiers and prompt templates known to rlbound."""
    from rlbound.engines.base import ENGINES
    from rlbound.tasks.base import TASKS
    from rlbound.tasks.templates import TEMPLATES
    from rlbound.verify.base import VERIFIERS

    for title, registry in (
        ("tasks", TASKS), ("engines", ENGINES), ("verifiers", VERIFIERS), ("templates", TEMPLATES),
    ):
        typer.echo(f"{title}: {', '.join(registry.names())}")


def main() -> None:
    """Console entry point: run the app, turning user errors into one line and exit 2."""
    try:
        app()
    except RlboundError as err:
        if _state["debug"]:
            raise
        print(f"rlbound: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("rlbound: interrupted (completed samples are kept; rerun to resume)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
