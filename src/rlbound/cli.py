"""The ``rlbound`` command: subcommands only; the work happens in the library modules.

Errors a user can fix are printed as one line (``rlbound: …``) with exit status 2; ``--debug``
shows the traceback instead. ``--quiet`` hides progress bars.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from rlbound.errors import RlboundError
from rlbound.progress import set_quiet

app = typer.Typer(
    help=(
        "rlbound: did RL give your model new reasoning, or only sharpen what the base model "
        "could already sample?\n\n"
        "Start with `rlbound lab run` (the whole boundary study on a CPU, no downloads),\n"
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


def _key_value_options(pairs: list[str], what: str = "task") -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise RlboundError(f"{what} option {pair!r} must look like KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _parse_value(value)
    return options


ENGINE_OPTION_HELP = ("KEY=VALUE for the engine (repeatable), e.g. -E dtype=bfloat16 "
                      "-E tensor_parallel_size=2 for vllm; an unknown key is refused.")


def _engine_options(pairs: list[str], batch_size: int | None, device: str | None) -> dict:
    """-E KEY=VALUE pairs, with --batch-size and --device where given."""
    options = _key_value_options(pairs, "engine")
    if batch_size:
        options["batch_size"] = batch_size
    if device:
        options["device"] = device
    return options


def _open_engine(engine: str, model: str, options: dict, replicas: int, gpus_per_replica: float,
                 cpus_per_replica: float, ray_address: str | None):
    """The engine, or ``replicas`` copies of it as Ray actors (rlbound.distributed)."""
    if replicas:
        from rlbound.distributed import ReplicaEngine

        return ReplicaEngine(engine, model, options, replicas=replicas, gpus_per_replica=gpus_per_replica,
                             cpus_per_replica=cpus_per_replica, ray_address=ray_address)
    if ray_address or gpus_per_replica:
        raise RlboundError("--ray-address and --gpus-per-replica need --replicas N")
    from rlbound.engines.base import load_engine

    return load_engine(engine, model, **options)


REPLICAS_HELP = "Run N copies of the engine as Ray actors (0: in this process)."
RAY_ADDRESS_HELP = "Ray cluster to use with --replicas (e.g. auto, ray://host:10001; default: start one here)."


DATA_DIR_HELP = "Folder of benchmark files for named benchmarks (default $RLBOUND_DATA; see `rlbound list`)."


def _build_task(task: str, options: dict, data_dir: Path | None = None):
    from rlbound.tasks.base import load_task
    from rlbound.tasks.benchmarks import BENCHMARKS

    if task not in ("file",) and Path(task).suffix in (".jsonl", ".json", ".parquet", ".gz", ".csv"):
        options = {"path": task, **options}
        task = "file"
    if task in BENCHMARKS and data_dir is not None:
        options = {**options, "data_dir": str(data_dir)}
    try:
        return load_task(task, **options)
    except TypeError as exc:
        raise RlboundError(f"task {task!r}: {exc}") from None


def _unsafe_options(task: str | None, task_options: dict, verifier_options: dict) -> None:
    """--unsafe-no-sandbox: the code verifier, and a code task's canonical runs, without the sandbox."""
    import inspect

    from rlbound.tasks.base import TASKS
    from rlbound.tasks.benchmarks import BENCHMARKS

    verifier_options["sandbox"] = False
    if task in BENCHMARKS:
        if BENCHMARKS[task].runs_canonical:
            task_options.setdefault("sandbox", False)
    elif task in TASKS and "sandbox" in inspect.signature(TASKS.get(task)).parameters:
        task_options.setdefault("sandbox", False)


JUDGE_ENGINE_HELP = "Engine of the QA judge (--verifier qa-judge): openai, an OpenAI-compatible server."
JUDGE_MODEL_HELP = "Served model name of the QA judge (--verifier qa-judge)."
JUDGE_URL_HELP = "URL of the QA judge's server, e.g. http://HOST:PORT/v1 (default env OPENAI_BASE_URL)."


def _judge_options(verifier_options: dict, verifier: str, engine: str | None, model: str | None,
                   url: str | None) -> None:
    """--judge-engine/--judge-model/--judge-url as the qa-judge verifier's options."""
    given = {k: v for k, v in (("judge_engine", engine), ("judge_model", model), ("judge_url", url)) if v}
    if given and verifier != "qa-judge":
        raise RlboundError(f"--judge-engine, --judge-model and --judge-url are for --verifier qa-judge, "
                           f"not {verifier!r}")
    verifier_options.update(given)


@app.command()
def sample(
    task: str = typer.Option(..., "--task", "-t", help="Task name (`rlbound list`) or a JSONL/JSON/Parquet file."),
    model: str = typer.Option(..., "--model", "-m", help="Model directory, .gguf file or hub name."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created, or resumed if it exists)."),
    engine: str = typer.Option("hf", "--engine", "-e", help="Engine: tiny, hf, vllm, openai."),
    n: int = typer.Option(16, "--n", "-n", help="Samples per problem."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (1 = off)."),
    top_k: int = typer.Option(0, help="Top-k filter (0 = off)."),
    max_tokens: int = typer.Option(512, help="Maximum new tokens per completion."),
    stop: List[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
    seed: int = typer.Option(0, help="Run seed; each sample's seed derives from it."),
    template: Optional[str] = typer.Option(None, help="Prompt template (default: the task's)."),
    verifier: Optional[str] = typer.Option(None, help="Verifier (default: the task's)."),
    verifier_option: List[str] = typer.Option([], "--verifier-option", "-V", help="KEY=VALUE for the verifier (repeatable), e.g. -V percent=value -V last_number_fallback=true."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="KEY=VALUE for the task (repeatable), e.g. -O limit=50."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    label: Optional[str] = typer.Option(None, help="Name of this run in reports (default: the directory name)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows decoded together by the engine."),
    device: Optional[str] = typer.Option(None, help="Torch device for the tiny and hf engines (default cpu)."),
    engine_option: List[str] = typer.Option([], "--engine-option", "-E", help=ENGINE_OPTION_HELP),
    verify_timeout: float = typer.Option(5.0, help="Hard limit in seconds per verification."),
    replicas: int = typer.Option(0, "--replicas", help=REPLICAS_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    gpus_per_replica: float = typer.Option(0, "--gpus-per-replica", help="GPUs of each replica (vllm: its tensor-parallel size)."),
    cpus_per_replica: float = typer.Option(1, "--cpus-per-replica", help="CPUs Ray reserves for each replica."),
    shard_samples: int = typer.Option(1024, help="Write a shard every this many verified samples..."),
    shard_seconds: float = typer.Option(30.0, help="...or every this many seconds, whichever comes first."),
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Code tasks: run programs without the sandbox (trusted code only; recorded in run.json, warned about in every report)."),
    judge_engine: Optional[str] = typer.Option(None, "--judge-engine", help=JUDGE_ENGINE_HELP),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help=JUDGE_MODEL_HELP),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help=JUDGE_URL_HELP),
) -> None:
    """Sample N completions per problem, verify them, and store them in a run directory.

    Rerunning the same command after an interruption fills only the missing samples; a larger
    -n tops the run up.
    """
    from rlbound.engines.base import SamplingParams
    from rlbound.sampler import sample_run
    from rlbound.verify.base import load_verifier

    if n < 1:
        raise RlboundError(f"--n must be >= 1, got {n}")
    if shard_samples < 1 or not shard_seconds > 0:
        raise RlboundError("--shard-samples must be >= 1 and --shard-seconds > 0")
    params = SamplingParams(
        temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, stop=tuple(stop)
    )
    task_options, verifier_options = _key_value_options(task_option), _key_value_options(verifier_option, "verifier")
    if unsafe_no_sandbox:
        _unsafe_options(task, task_options, verifier_options)
        typer.echo("warning: --unsafe-no-sandbox: programs run as plain processes; use it for trusted code only", err=True)
    the_task = _build_task(task, task_options, data_dir)
    _judge_options(verifier_options, verifier or the_task.verifier, judge_engine, judge_model, judge_url)
    the_verifier = load_verifier(verifier or the_task.verifier, **verifier_options)
    engine_options = _engine_options(engine_option, batch_size, device)
    the_engine = _open_engine(engine, model, engine_options, replicas, gpus_per_replica, cpus_per_replica,
                              ray_address)
    try:
        stats = sample_run(
            out, the_task, the_engine, the_verifier, params, n, seed=seed, template=template,
            label=label, verify_timeout_s=verify_timeout, shard_samples=shard_samples,
            shard_seconds=shard_seconds,
        )
    finally:
        the_engine.close()
    typer.echo(
        f"{stats.path}: {stats.sampled} samples added, {stats.already_present} already present"
        + (f", {stats.timeouts} verifier timeouts" if stats.timeouts else "")
    )


@app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="Samples file: lm-eval --log_samples samples_*.jsonl, evalplus samples.jsonl, a verl generations dump (<step>.jsonl), or JSONL of problem_id + completion."),
    task: str = typer.Option(..., "--task", "-t", help="The task the samples answer (`rlbound list`) or a JSONL/JSON/Parquet file."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created, or extended if it exists)."),
    fmt: str = typer.Option("auto", "--format", help="auto, lm-eval, evalplus, verl or jsonl."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="The model that generated the samples (recorded; default: unknown)."),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Field holding the problem id, dotted for nested ones (e.g. doc.unique_id)."),
    completion_field: Optional[str] = typer.Option(None, "--completion-field", help="Field holding the completion text."),
    template: Optional[str] = typer.Option(None, help="The prompt template the samples were generated with (default: the task's; used by score and distill)."),
    verifier: Optional[str] = typer.Option(None, help="Verifier (default: the task's)."),
    verifier_option: List[str] = typer.Option([], "--verifier-option", "-V", help="KEY=VALUE for the verifier (repeatable)."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="KEY=VALUE for the task (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    label: Optional[str] = typer.Option(None, help="Name of this run in reports (default: the directory name)."),
    verify_timeout: float = typer.Option(5.0, help="Hard limit in seconds per verification."),
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Code tasks: run programs without the sandbox (trusted code only)."),
) -> None:
    """Grade completions generated elsewhere with rlbound's verifiers and store them as a run.

    Seeds, token counts and log-probs are recorded as unknown. Importing the same file again
    adds nothing; another file's samples are added after those already stored.
    """
    from rlbound.importer import import_samples
    from rlbound.verify.base import load_verifier

    task_options, verifier_options = _key_value_options(task_option), _key_value_options(verifier_option, "verifier")
    if unsafe_no_sandbox:
        _unsafe_options(task, task_options, verifier_options)
        typer.echo("warning: --unsafe-no-sandbox: programs run as plain processes; use it for trusted code only", err=True)
    the_task = _build_task(task, task_options, data_dir)
    the_verifier = load_verifier(verifier or the_task.verifier, **verifier_options)
    result = import_samples(file, the_task, the_verifier, out, fmt=fmt, model_name=model_name, id_field=id_field,
                            completion_field=completion_field, template=template, label=label,
                            verify_timeout_s=verify_timeout)
    typer.echo(f"{result.path}: {result.imported} samples imported ({result.fmt}, {result.problems} problems), "
               f"{result.already_present} already present"
               + (f", {result.timeouts} verifier timeouts" if result.timeouts else ""))
    if result.missing_problems:
        typer.echo(f"note: {result.missing_problems} of the task's {len(the_task)} problems have no sample in the file")


VERDICTS_HELP = "Which verdicts: all (every test) or base (code benchmarks' base tests only)."


def _load_runs(runs: list[Path], verdicts: str = "all"):
    from rlbound.store import load_run  # the report and passk check that the runs share their problems

    if not runs:
        raise RlboundError("give at least one run directory")
    if verdicts not in ("all", "base"):
        raise RlboundError(f"--verdicts must be all or base, got {verdicts!r}")
    loaded = [load_run(r).samples for r in runs]
    for run, samples in zip(runs, loaded):
        if len(samples) == 0:
            raise RlboundError(f"run '{run}' holds no samples yet")
    return [s.base_view() for s in loaded] if verdicts == "base" else loaded


@app.command()
def passk(
    runs: List[Path] = typer.Argument(..., help="Run directories."),
    k: List[int] = typer.Option([], "--k", "-k", help="Extra k to report (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
    verdicts: str = typer.Option("all", "--verdicts", help=VERDICTS_HELP),
) -> None:
    """pass@k (unbiased estimator, bootstrap 95% CI over problems) of each run."""
    from rlbound.report.html import passk_rows

    rows = passk_rows(_load_runs(runs, verdicts), extra_ks=tuple(k))
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
    verdicts: str = typer.Option("all", "--verdicts", help=VERDICTS_HELP),
) -> None:
    """Write report.html (pass@k curves with bands, histograms, tables), results.json and CSV."""
    from rlbound.report.html import write_report

    from rlbound.store import load_run

    scores = [s for r in runs for s in load_run(r).scores]  # perplexity files from `rlbound score`
    path = write_report(_load_runs(runs, verdicts), out, extra_ks=tuple(k), title=title, perplexity=scores)
    for warning in json.loads((Path(path).parent / "results.json").read_text()).get("warnings", []):
        typer.echo(f"warning: {warning['message']}")
    typer.echo(f"report: {path}")


@app.command()
def score(
    run: Path = typer.Argument(..., help="Run directory whose samples to score."),
    scorer: str = typer.Option(..., "--scorer", "-s", help="Scoring model (directory, .gguf file or hub name)."),
    engine: str = typer.Option("hf", "--engine", "-e", help="Engine of the scoring model: tiny, hf, vllm, openai."),
    label: Optional[str] = typer.Option(None, help="Name of the score file (default: the scorer's model name)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows scored together by the engine."),
    device: Optional[str] = typer.Option(None, help="Torch device for the tiny and hf engines (default cpu)."),
    engine_option: List[str] = typer.Option([], "--engine-option", "-E", help=ENGINE_OPTION_HELP),
    replicas: int = typer.Option(0, "--replicas", help=REPLICAS_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    gpus_per_replica: float = typer.Option(0, "--gpus-per-replica", help="GPUs of each replica (vllm: its tensor-parallel size)."),
    cpus_per_replica: float = typer.Option(1, "--cpus-per-replica", help="CPUs Ray reserves for each replica."),
) -> None:
    """Perplexity of RUN's completions under another model: RUN/scores/<label>.parquet.

    PPL = exp(-mean token log P(y_t | x, y_<t)) per sample, the prompt rendered as when RUN was
    sampled. Resumable; `rlbound report` shows the distributions of the runs' score files.
    """
    from rlbound.scoring import score_run
    from rlbound.store import read_meta

    read_meta(run)  # a missing run is reported before a model is loaded
    options = _engine_options(engine_option, batch_size, device)
    the_engine = _open_engine(engine, scorer, options, replicas, gpus_per_replica, cpus_per_replica, ray_address)
    try:
        stats = score_run(run, the_engine, label=label)
    finally:
        the_engine.close()
    typer.echo(f"{stats.path}: {stats.scored} samples scored, {stats.already_present} already present")


@app.command()
def reverify(
    run: Path = typer.Argument(..., help="Run directory whose stored samples to grade again."),
    timeout: float = typer.Option(5.0, "--timeout", help="Hard limit in seconds per verification."),
    force: bool = typer.Option(False, "--force", help="Grade again even if the run's rules are current (e.g. with a larger --timeout)."),
    judge_engine: Optional[str] = typer.Option(None, "--judge-engine", help=JUDGE_ENGINE_HELP),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help=JUDGE_MODEL_HELP + " Another model than the run's re-grades it."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help=JUDGE_URL_HELP),
) -> None:
    """Re-grade every stored sample of RUN under the current verifier rules (nothing re-sampled).

    The new verdicts go beside the old ones (RUN/verdicts/<tag>.parquet; samples/ is never
    changed) and become the run's verdicts for every analysis and report; a later `rlbound
    sample` top-up grades new samples under the same rules. A run graded by the QA judge needs
    --judge-url (run.json does not record the server).
    """
    from rlbound.reverify import describe, reverify_run
    from rlbound.store import read_meta

    judge: dict = {}
    if judge_engine or judge_model or judge_url:
        spec = ((read_meta(run).get("config") or {}).get("verifier") or {})
        _judge_options(judge, spec.get("name", "?"), judge_engine, judge_model, judge_url)
    result = reverify_run(run, timeout_s=timeout, force=force, verifier_options=judge)
    typer.echo(describe(result))
    if result.outcome != "written":
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(caption="a sample can count under several kinds" if len(result.changes) > 2 else None)
    table.add_column("verdict change")
    table.add_column("samples", justify="right")
    for kind, count in result.changes.items():
        table.add_row(kind, str(count))
    Console().print(table)
    if result.timeouts:
        typer.echo(f"{result.timeouts} checks timed out (graded wrong); rerun with --force and a larger --timeout to retry them")
    typer.echo(f"verdicts: {result.file} (now current; the shards in {run / 'samples'} are unchanged)")


def _cell(text: str | None, width: int | None = 60) -> str:
    """User text as a rich table cell: on one line, clipped to ``width``, markup escaped."""
    from rich.markup import escape

    if text is None:
        return "–"
    text = " ".join(str(text).split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return escape(text)


@app.command("verify-check")
def verify_check(
    file: Path = typer.Argument(..., help="Graded JSONL: gold, completion, expect (true/false/null), optional id and source; with --task: problem_id, completion, optional expect."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Grade completions of this task's problems (rows problem_id, completion)."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="KEY=VALUE for the task (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    verifier: Optional[str] = typer.Option(None, "--verifier", help="Verifier to check (default: the task's, else math)."),
    verifier_option: List[str] = typer.Option([], "--verifier-option", "-V", help="KEY=VALUE for the verifier (repeatable), e.g. -V percent=value -V last_number_fallback=true."),
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run code without the sandbox (trusted code only)."),
    timeout: float = typer.Option(10.0, "--timeout", help="Hard limit in seconds per verification."),
    show: int = typer.Option(10, "--show", help="Disagreements to list (false acceptances first); with --task, rows to list."),
) -> None:
    """Agreement of a verifier with a trusted grader's labels, per source; lists disagreements.

    With --task, grades given completions of a task's problems (samples another tool made, or a
    code benchmark's programs) through the same sandbox and verdict path as sampling.
    """
    from rich.console import Console
    from rich.table import Table

    from rlbound.verify.agreement import measure_agreement, read_graded, read_task_completions, tally
    from rlbound.verify.base import load_verifier
    from rlbound.verify.pool import verify_batch

    if show < 0:
        raise RlboundError(f"--show must be >= 0, got {show}")
    if timeout <= 0:
        raise RlboundError(f"--timeout must be positive, got {timeout}")
    task_options, verifier_options = _key_value_options(task_option), _key_value_options(verifier_option, "verifier")
    if unsafe_no_sandbox:
        _unsafe_options(task, task_options, verifier_options)
        typer.echo("warning: --unsafe-no-sandbox: programs run as plain processes; use it for trusted code only", err=True)
    console = Console()
    if task is None:
        cases = read_graded(file)
        if not cases:
            raise RlboundError(f"graded file '{file}' holds no labelled cases")
        the_verifier = load_verifier(verifier or "math", **verifier_options)
        sources = measure_agreement(cases, the_verifier, timeout_s=timeout, progress_label="verifying")
    else:
        the_task = _build_task(task, task_options, data_dir)
        the_verifier = load_verifier(verifier or the_task.verifier, **verifier_options)
        rows = read_task_completions(file, {p.id: the_verifier.reference_for(p) for p in the_task.problems},
                                     the_task.name)
        if not rows:
            raise RlboundError(f"completions file '{file}' holds no rows")
        verdicts = verify_batch(the_verifier, [c.gold for c, _ in rows], [c.completion for c, _ in rows],
                                timeout_s=timeout, progress_label="verifying")
        listed = Table(title=_cell(f"{the_verifier.name} verdicts on {the_task.name} ({file.name})", None))
        for col in ("id", "verdict", "status", "base tests", "expect"):
            listed.add_column(col, overflow="fold")
        for (case, labelled), v in list(zip(rows, verdicts))[: show or len(rows)]:
            listed.add_row(_cell(case.id, None), "pass" if v.correct else "fail", v.status,
                           "–" if v.correct_base is None else ("pass" if v.correct_base else "fail"),
                           ("true" if case.expect else "false") if labelled else "–")
        console.print(listed)
        counts = Counter(("pass" if v.correct else "fail", v.status) for v in verdicts)
        typer.echo(", ".join(f"{n} {verdict}" + ("" if status == "ok" else f" ({status})")
                             for (verdict, status), n in sorted(counts.items())))
        labelled_rows = [(c, v) for (c, labelled), v in zip(rows, verdicts) if labelled]
        if not labelled_rows:
            return
        sources = tally([c for c, _ in labelled_rows], [v for _, v in labelled_rows])
    table = Table(title=_cell(f"{the_verifier.name} verifier vs the graders' labels ({file.name})", None))
    table.add_column("source", overflow="fold")
    for col in ("cases", "agree", "agreement", "false acceptances", "false rejections"):
        table.add_column(col, justify="right")
    agreement_rows = [(s.source, s.cases, s.agree, len(s.false_accepts), len(s.false_rejects)) for s in sources]
    if len(agreement_rows) > 1:
        agreement_rows.append(("all", *(sum(r[i] for r in agreement_rows) for i in range(1, 5))))
    for source, n, agree, accepts, rejects in agreement_rows:
        table.add_row(_cell(source, None), str(n), str(agree), f"{100 * agree / n:.1f} %", str(accepts), str(rejects))
    console.print(table)
    disagreements = [d for s in sources for d in s.false_accepts] + [d for s in sources for d in s.false_rejects]
    if not disagreements or show == 0:
        return
    listed = Table(title=f"disagreements ({min(show, len(disagreements))} of {len(disagreements)})")
    for col in ("id", "gold", "answer", "status", "expect"):
        listed.add_column(col, overflow="fold")
    for case, verdict in disagreements[:show]:
        gold = case.gold if task is None else "(the task's tests)"
        listed.add_row(_cell(case.id, None), _cell(gold), _cell(verdict.answer), verdict.status,
                       "true" if case.expect else "false")
    console.print(listed)


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise RlboundError(f"{what} must be numbers separated by commas, e.g. 0.6,0.8,1.0; got {text!r}") from None


@app.command("match-temperature")
def match_temperature_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Model B, re-sampled at each temperature."),
    reference: Path = typer.Option(..., "--reference", "-r", help="Run A whose token entropy B should match."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the runs per temperature and the result json."),
    engine: str = typer.Option("hf", "--engine", "-e", help="Engine of model B: tiny, hf, vllm, openai."),
    temperatures: str = typer.Option("0.6,0.8,1.0,1.2,1.4", help="Temperatures to sample B at, comma-separated."),
    problems: int = typer.Option(20, help="Problems of run A to re-sample (a seeded random subset)."),
    n: int = typer.Option(8, "--n", "-n", help="Samples per problem and temperature."),
    seed: int = typer.Option(0, help="Seed of the subset and of the samples."),
    reference_model: Optional[str] = typer.Option(None, help="Model A: re-measure A's entropy as B's is measured."),
    reference_engine: Optional[str] = typer.Option(None, help="Engine of model A (default: --engine)."),
    batch_size: Optional[int] = typer.Option(None, help="Rows decoded together by the engine."),
    device: Optional[str] = typer.Option(None, help="Torch device for the tiny and hf engines (default cpu)."),
    engine_option: List[str] = typer.Option([], "--engine-option", "-E", help=ENGINE_OPTION_HELP),
) -> None:
    """The temperature at which model B's token entropy matches run A's (re-sampling a subset)."""
    from rlbound.engines.base import load_engine
    from rlbound.store import read_meta
    from rlbound.temperature_match import RESULT_FILE, run_temperature_match

    temps = _floats(temperatures, "--temperatures")
    read_meta(reference)
    options = _engine_options(engine_option, batch_size, device)
    ref_engine = load_engine(reference_engine or engine, reference_model, **options) if reference_model else None
    result = run_temperature_match(load_engine(engine, model, **options), reference, temps, out,
                                   problems=problems, n=n, seed=seed, reference_engine=ref_engine)
    for t, ent, _ in result.points:
        typer.echo(f"T={t:g}: token entropy {ent.mean:.4f} [{ent.lo:.4f}, {ent.hi:.4f}]")
    m = result.match
    typer.echo(f"target ({result.reference}): {result.target.mean:.4f} [{result.target.lo:.4f}, {result.target.hi:.4f}]")
    found = f"matched temperature: {m.temperature:.3f}" if m.bracketed else f"not matched: {m.note}"
    typer.echo(found + f" ({out / RESULT_FILE})")
    for note in result.notes:
        typer.echo(f"note: {note}")


@app.command()
def patterns(
    runs: List[Path] = typer.Argument(..., help="Run directories."),
    markers: Optional[Path] = typer.Option(
        None, help='JSON file {"phrases": {category: [...]}, "lines": {category: [...]}} replacing the default markers.'
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> None:
    """Reasoning-pattern markers (reflection, transition, backtracking) per 1k completion tokens."""
    from rlbound.analysis.patterns import DEFAULT_MARKERS, load_markers, reasoning_patterns_run

    marker_list = load_markers(markers) if markers else DEFAULT_MARKERS
    results = [reasoning_patterns_run(r, markers=marker_list) for r in _load_runs(runs)]
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    cats = list(dict.fromkeys(c for r in results for c in r.categories))
    table = Table(title="markers per 1k completion tokens (95% bootstrap CI over problems)")
    for col in ["run", *cats, "samples", "tokens"]:
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in results:
        if not r.available:
            table.add_row(r.label, *(["n/a"] * len(cats)), str(r.n_samples), "–")
            continue
        cells = []
        for c in cats:
            mean, lo, hi = r.rate(c)
            cells.append(f"{mean:.2f} [{lo:.2f}, {hi:.2f}]")
        table.add_row(r.label, *cells, str(r.n_samples), str(r.n_tokens))
    Console().print(table)
    for r in results:
        if not r.available:
            typer.echo(f"{r.label}: {r.note}")


@app.command()
def probe(
    task: str = typer.Option(..., "--task", "-t", help="Task name (`rlbound list`) or a JSONL/JSON/Parquet file."),
    model: str = typer.Option(..., "--model", "-m", help="Model directory, .gguf file or hub name."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for probe.json (replaced if present)."),
    engine: str = typer.Option("hf", "--engine", "-e", help="Engine: tiny, hf, vllm, openai."),
    percent: List[float] = typer.Option([], "--percent", "-p", help="Share of each problem's words given (repeatable; default 40, 60, 80)."),
    max_tokens: int = typer.Option(512, help="Maximum new tokens per continuation."),
    template: str = typer.Option("raw", help="Prompt template around the cut text (default raw: plain continuation)."),
    verifier: Optional[str] = typer.Option(None, help="Verifier for answer accuracy (default: the task's)."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="KEY=VALUE for the task (repeatable)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    batch_size: Optional[int] = typer.Option(None, help="Rows decoded together by the engine."),
    device: Optional[str] = typer.Option(None, help="Torch device for the tiny and hf engines (default cpu)."),
    engine_option: List[str] = typer.Option([], "--engine-option", "-E", help=ENGINE_OPTION_HELP),
    verify_timeout: float = typer.Option(5.0, help="Hard limit in seconds per verification."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Contamination probe: greedy continuation of the first 40/60/80 % of each problem's words.

    Reports exact match and ROUGE-L F1 of the continuation against the rest of the problem, and
    the answer accuracy of that continuation; writes OUT/probe.json.
    """
    from rlbound.analysis.contamination import DEFAULT_PERCENTS
    from rlbound.engines.base import load_engine
    from rlbound.probe import run_probe, write_probe
    from rlbound.verify.base import load_verifier

    the_task = _build_task(task, _key_value_options(task_option), data_dir)
    the_verifier = load_verifier(verifier or the_task.verifier)
    options = _engine_options(engine_option, batch_size, device)
    result = run_probe(the_task, load_engine(engine, model, **options), the_verifier,
                       percents=tuple(percent) or DEFAULT_PERCENTS, max_tokens=max_tokens, template=template,
                       verify_timeout_s=verify_timeout)
    path = write_probe(result, out)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in result.shares], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="contamination probe (greedy; 95% bootstrap CI over problems)")
        for col in ("prompt share", "problems", "exact match", "ROUGE-L F1", "answer accuracy"):
            table.add_column(col, justify="right")
        for s in result.shares:
            table.add_row(f"{s.percent:g} %", str(s.n_problems),
                          *(f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in (s.exact_match, s.rouge_l, s.answer_accuracy)))
        Console().print(table)
    if result.skipped:
        typer.echo(f"skipped {len(result.skipped)} problem(s) of fewer than two words")
    typer.echo(f"probe: {path}")


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


@app.command("export-hf")
def export_hf_cmd(
    model: Path = typer.Argument(..., help="Tiny model directory (from fit-tiny, train or the lab: the one holding model.safetensors)."),
    out: Path = typer.Argument(..., help="Directory for the Hugging Face model (created)."),
    force: bool = typer.Option(False, "--force", help="Write into OUT even if it is not empty (replaces the exported files, leaves others)."),
) -> None:
    """Write a tiny model as a Hugging Face LlamaForCausalLM directory: weights, config, fast tokenizer.

    The result loads with transformers' AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUT)
    and with `rlbound sample --engine hf --model OUT`.
    """
    from rlbound.engines.tiny.export import export_hf, export_summary

    for line in export_summary(export_hf(model, out, force=force)):
        typer.echo(line)


@app.command()
def train(
    algo: str = typer.Option("grpo", "--algo", "-a", help="Algorithm: ppo, grpo, dr_grpo, rloo, reinforce_pp, remax, dapo, psr, nsr, w_reinforce, prerl, nsr_prerl, psr_prerl, dsrl."),
    model: str = typer.Option(..., "--model", "-m", help="Starting model: a tiny model directory or a transformers model."),
    task: str = typer.Option(..., "--task", "-t", help="Training task name or a JSONL/JSON/Parquet file."),
    task_option: List[str] = typer.Option([], "--task-option", "-O", help="Task option KEY=VALUE (repeatable), e.g. -O split=train."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: metrics.jsonl, checkpoint/, model/ (resumed if it exists)."),
    engine: str = typer.Option("tiny", "--engine", "-e", help="tiny or hf (small models on CPU)."),
    steps: int = typer.Option(40, help="Policy updates."),
    prompts_per_step: int = typer.Option(16, help="Problems per rollout batch."),
    group_size: int = typer.Option(8, help="Samples per problem."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    temperature: float = typer.Option(1.0, help="Rollout temperature."),
    max_tokens: int = typer.Option(160, help="Longest response."),
    kl_coef: Optional[float] = typer.Option(None, help="KL-to-reference weight (default: the algorithm's)."),
    entropy_coef: Optional[float] = typer.Option(None, help="Entropy bonus weight (default: the algorithm's)."),
    reward: str = typer.Option("correct", help="Reward: correct, random, inverse, format_only, incorrect_label."),
    labels_from: Optional[Path] = typer.Option(None, "--labels-from", help="incorrect_label reward: a run of the base model on the training task; each problem's label is its most frequent wrong answer."),
    reward_p: float = typer.Option(0.5, help="Success probability of the random reward."),
    one_shot: bool = typer.Option(False, help="Train on the task's first problem only."),
    dsrl_switch: int = typer.Option(10, help="DSRL: NSR-PreRL steps before GRPO."),
    updates_per_batch: int = typer.Option(1, help="Optimiser passes over each rollout batch."),
    minibatches: int = typer.Option(1, help="Minibatches per pass."),
    checkpoint_every: int = typer.Option(10, help="Steps between checkpoints."),
    seed: int = typer.Option(0, help="Run seed."),
    dtype: str = typer.Option("float32", "--dtype", help="Tiny models: compute format, auto (bfloat16 where the CPU has it), float32 or bfloat16."),
) -> None:
    """Train a model with a policy-gradient algorithm on verifiable rewards (resumable)."""
    from rlbound.train.config import TrainerConfig
    from rlbound.train.loop import train_rl

    labels = None
    if labels_from is not None:
        from rlbound.train.labels import labels_from_run

        labels = labels_from_run(labels_from)
    elif reward == "incorrect_label":
        raise RlboundError("the incorrect_label reward needs wrong labels: pass --labels-from RUN, a run of the "
                           "base model's samples on the training task (rlbound sample)")
    config = TrainerConfig(
        algo=algo, steps=steps, prompts_per_step=prompts_per_step, group_size=group_size, lr=lr,
        temperature=temperature, max_tokens=max_tokens, kl_coef=kl_coef, entropy_coef=entropy_coef,
        reward=reward, reward_p=reward_p, one_shot=one_shot, dsrl_switch=dsrl_switch,
        updates_per_batch=updates_per_batch, minibatches=minibatches, checkpoint_every=checkpoint_every,
        seed=seed, dtype=dtype,
    )
    result = train_rl(model, _build_task(task, _key_value_options(task_option), data_dir), config, out, engine=engine,
                      labels=labels)
    last = result.metrics[-1] if result.metrics else {}
    typer.echo(f"trained {config.steps} steps of {algo}; last step reward {last.get('reward', float('nan')):.3f}, "
               f"accuracy {last.get('accuracy', float('nan')):.3f}")
    typer.echo(f"metrics: {Path(out) / 'metrics.jsonl'}")
    typer.echo(f"model: {result.model_dir}")


@app.command()
def distill(
    run: List[Path] = typer.Option(..., "--run", "-r", help="Teacher run directory (repeatable): its verified-correct samples are the training data."),
    model: str = typer.Option(..., "--model", "-m", help="Student: a tiny model directory or a transformers model."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: distill.json, metrics.jsonl, model/ (resumed if it exists)."),
    engine: str = typer.Option("tiny", "--engine", "-e", help="Student engine: tiny or hf."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (default: --epochs 2)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the examples (instead of --steps)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default 3e-4 tiny, 1e-5 hf)."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per step (default 64 tiny, 8 hf)."),
    warmup: Optional[int] = typer.Option(None, help="Warm-up steps (default: a tenth of the steps)."),
    max_per_problem: Optional[int] = typer.Option(None, help="At most this many correct samples per problem (default: all)."),
    unique: bool = typer.Option(False, "--unique", help="Drop repeated identical completions of a problem."),
    seed: int = typer.Option(0, help="Training seed."),
    device: str = typer.Option("cpu", help="Torch device."),
    checkpoint_every: int = typer.Option(50, help="Steps between checkpoints (a rerun resumes from the last)."),
) -> None:
    """Fine-tune a student on a teacher's verified-correct samples (supervised, completion tokens only).

    Prompts are rendered with each teacher run's template, as they were sampled. The result,
    OUT/model, is what `rlbound sample` and `rlbound train` take (same --engine).
    """
    from rlbound.distill import distill_run

    result = distill_run(run, model, out, engine=engine, steps=steps, epochs=epochs, lr=lr, batch_size=batch_size,
                         warmup=warmup, max_per_problem=max_per_problem, unique=unique, seed=seed, device=device,
                         checkpoint_every=checkpoint_every)
    if result.already_done:
        typer.echo(f"already distilled with these settings (final loss {result.final_loss:.4f})")
    else:
        typer.echo(f"distilled {result.steps} steps on {result.examples} examples; final loss {result.final_loss:.4f}"
                   + (f"; resumed at step {result.resumed_at}" if result.resumed_at else "")
                   + (f" ({result.skipped_long} longer than the student's context skipped)" if result.skipped_long else ""))
    typer.echo(f"model: {result.model_dir}")


lab_app = typer.Typer(
    help="The lab: a reasoning world small enough to pretrain, train and measure on a CPU in minutes.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")


def _differences_text(get, includes_zero, k: int) -> str:
    """Δpass@1, Δpass@k and net solved, each ``get(name) -> (value, lo, hi)``, ≈0 where flagged."""
    return ", ".join(
        f"{label} {get(name)[0]:+.{digits}f} [{get(name)[1]:+.{digits}f}, {get(name)[2]:+.{digits}f}]"
        + (" ≈0" if name in includes_zero else "")
        for name, label, digits in (("delta_pass@1", "Δpass@1", 3), ("delta_pass@k", f"Δpass@{k}", 3),
                                    ("net", "net solved", 0)))


@lab_app.command("run")
def lab_run(
    preset: str = typer.Option("default", "--preset", "-p", help="quick (~3 min), default (~15 min) or full (~1 h, every RL algorithm)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML file overriding the preset's knobs (see `rlbound lab config`)."),
    out: Path = typer.Option(Path("runs/lab"), "--out", "-o", help="Lab directory; stages already built there are reused."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Number format of every stage (model.dtype): auto (bfloat16 where the CPU has it), float32 or bfloat16."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Processes that build stages side by side, each as soon as the stages it reads exist (default: one per core, at most 8; 1: one after the other, in this process)."),
) -> None:
    """Build the world, pretrain base and teacher, distil, self-train, train with RL, sample every model, report."""
    from dataclasses import replace

    from rlbound.lab.config import load_config
    from rlbound.lab.pipeline import run_lab

    chosen = load_config(preset, config)
    if dtype is not None:
        chosen = replace(chosen, model=replace(chosen.model, dtype=dtype))
    result = run_lab(out, chosen, preset_name=preset, workers=workers)
    width = max([13, *(len(row["model"]) for row in result.summary)])
    for row in result.summary:
        k = row["k"]
        trained = f"  train pass@1 {row['train_pass@1']:.3f}" if "train_pass@1" in row else ""
        versus = ""
        if "net" in row:  # the model minus the base, with 95% intervals; ≈0: the interval includes 0
            versus = "  vs base: " + _differences_text(
                lambda name: (row[name], *row[name + "_ci"]), row["includes_zero"], k)
        if "vs_start" in row:  # RL after imitation against imitation alone
            start = row["vs_start"]
            versus += f"; vs {start['model']}: " + _differences_text(lambda name: start[name],
                                                                      start["includes_zero"], k)
        typer.echo(f"{row['family']:<10} {row['model']:<{width}} pass@1 {row['pass@1']:.3f}  "
                   f"pass@{k} {row[f'pass@{k}']:.3f}  solved {row['solved']}/{row['problems']} "
                   f"(+{row['only_model']} -{row['only_base']} vs base)  ΔSE {row['delta_se']:+.3f}{trained}{versus}")
    plan = result.schedule
    if plan["built"]:
        typer.echo(f"stages: {plan['built']} built in {plan['wall_s']:.0f} s with {plan['workers']} worker(s) "
                   f"(their own times add up to {plan['stage_s']:.0f} s)")
    for family, path in result.reports.items():
        typer.echo(f"report ({family}): {path}")


@lab_app.command("config")
def lab_config(
    preset: str = typer.Option("default", "--preset", "-p", help="The preset whose knobs to print."),
) -> None:
    """Print the preset's configuration as a commented TOML file to copy and edit."""
    from rlbound.lab.config import config_toml, preset as get_preset

    typer.echo(config_toml(get_preset(preset), f"rlbound lab configuration: preset {preset!r}"), nl=False)


@app.command("list")
def list_components(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Tasks, engines, verifiers and prompt templates known to rlbound, and the named benchmarks
    with their sizes and where each would load from."""
    from rich.console import Console
    from rich.table import Table

    from rlbound.engines.base import ENGINES
    from rlbound.tasks.base import TASKS
    from rlbound.tasks.benchmarks import BENCHMARKS, where_from
    from rlbound.tasks.templates import TEMPLATES
    from rlbound.verify.base import VERIFIERS

    for title, registry in (
        ("tasks", TASKS), ("engines", ENGINES), ("verifiers", VERIFIERS), ("templates", TEMPLATES),
    ):
        typer.echo(f"{title}: {', '.join(registry.names())}")
    table = Table(title="benchmarks (rlbound sample --task NAME)")
    for col in ("name", "problems", "verifier", "template", "ids", "loads from"):
        table.add_column(col, overflow="fold")
    for bench in BENCHMARKS.values():
        table.add_row(bench.name, str(bench.size or "varies"), bench.verifier, bench.template, bench.ids or "id",
                      where_from(bench, data_dir))
    Console(width=160).print(table)


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
