"""The seed papers' benchmarks by name: ``rlbound sample --task math500``.

Each :class:`Benchmark` entry holds what a user would otherwise look up and pass as ``-O``
options: where the data lives (file names in a local data folder, and a Hugging Face dataset id,
config and split), its field mapping and answer format, which field holds the benchmark's own
problem ids, the default prompt template (the one the large-k studies used: ``qwen-boxed`` for
the maths sets) and the verifier. Every entry is registered as a task of the same name.

Where a benchmark's problems come from, in this order:

1. ``-O path=FILE``: that file;
2. the data folder, ``--data-dir DIR`` (``rlbound sample`` / ``list``) or ``$RLBOUND_DATA``: the
   entry's file names under it (e.g. ``math/math500_test.jsonl``, laid out as in the project's
   ``shared/data``), or directly in it;
3. the Hugging Face hub through ``datasets`` (``pip install datasets``), when online: the split is
   written once to ``$RLBOUND_CACHE/benchmarks/`` as JSONL and read from there like a local file;
4. otherwise a one-line error saying which file to put where.

The run records the benchmark in ``config.task`` (name and options, ``sha256`` of the problems)
and where it came from in ``task_source`` (file or hub id and revision); ``rlbound report``
refuses to compare two runs on the same benchmark whose problems differ.

What this module does not do: it does not know every benchmark (any file still works as
``--task FILE`` with ``-O`` field options), and hub ids, fields and revisions are facts taken from
the datasets' public cards, not checked here (this machine has no hub access): a pinned revision
is passed as ``-O revision=SHA``, and the revision actually loaded is recorded when the hub tells it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlbound.errors import RlboundError
from rlbound.tasks.base import Task, register_task

DATA_ENV = "RLBOUND_DATA"


@dataclass(frozen=True)
class HubSource:
    """A Hugging Face dataset: ``load_dataset(dataset, config, split=split, revision=revision)``."""

    dataset: str
    split: str
    config: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        return self.dataset + (f" ({self.config})" if self.config else "") + f", split {self.split}"


@dataclass(frozen=True)
class Benchmark:
    """One named benchmark: its data, how to read it, how to prompt for it and grade it."""

    name: str
    title: str
    files: tuple[str, ...]
    """File names under the data folder, first found wins (the first is the one errors ask for)."""
    build: Callable[..., Task]
    """(path, limit=, template=, **options) → Task: reads one local file of the benchmark."""
    hub: HubSource | None = None
    size: int | None = None
    """Problems in the benchmark as published (None where it varies by version)."""
    template: str = "qwen-boxed"
    verifier: str = "math"
    ids: str = ""
    """Which field gives the problem ids, in words (shown by ``rlbound list``)."""
    no_hub: str = ""
    """Why there is no hub source, and where to get the file."""
    options: dict[str, Any] = field(default_factory=dict)
    """Default task options of the builder."""
    runs_canonical: bool = False
    """Whether loading runs the benchmark's canonical solutions (in the sandbox, to find the
    expected outputs): the builder then takes ``sandbox=``, which ``--unsafe-no-sandbox`` turns off."""


BENCHMARKS: dict[str, Benchmark] = {}


def data_folder(given: str | Path | None = None) -> Path | None:
    """The local data folder: ``given``, else ``$RLBOUND_DATA``, else None."""
    chosen = given or os.environ.get(DATA_ENV)
    return Path(chosen).expanduser() if chosen else None


def local_file(bench: Benchmark, root: Path | None) -> Path | None:
    """The benchmark's file in the data folder ``root`` (or directly in it), or None."""
    if root is None:
        return None
    for name in bench.files:
        for candidate in (root / name, root / Path(name).name):
            if candidate.is_file():
                return candidate
    return None


def cache_root() -> Path:
    """Where hub copies are kept: ``benchmarks/`` in rlbound's cache folder."""
    from rlbound.tasks.code import cache_dir

    return cache_dir() / "benchmarks"


def _hub_file(bench: Benchmark, revision: str | None, folder: Path | None) -> tuple[Path, dict[str, Any]] | None:
    """The benchmark's split from the hub, cached as JSONL; None when ``datasets`` is missing."""
    hub = bench.hub
    assert hub is not None
    revision = revision or hub.revision
    tag = (revision or "main")[:12]
    file = cache_root() / f"{bench.name}-{tag}.jsonl"
    source = {"hub": hub.dataset, "config": hub.config, "split": hub.split, "revision": revision}
    if file.is_file() and _source_file(file).is_file():
        return file, json.loads(_source_file(file).read_text())
    try:
        import datasets
    except ImportError:
        return None
    try:
        loaded = datasets.load_dataset(hub.dataset, hub.config, split=hub.split, revision=revision)
    except Exception as exc:  # datasets raises many kinds (connection, missing split, offline mode)
        raise _missing(bench, f"loading {hub.describe()} from the Hugging Face hub failed "
                              f"({type(exc).__name__}: {_first_line(exc)})", folder) from None
    resolved = _resolved_revision(hub.dataset, revision)
    source["revision"] = resolved or revision
    _write_records(file, loaded, source)
    return file, source


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


def _resolved_revision(dataset: str, revision: str | None) -> str | None:
    """The commit the hub serves for ``revision`` (None when it cannot say, e.g. a local folder)."""
    if Path(dataset).is_dir():
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(dataset, revision=revision).sha
    except Exception:  # offline, a local mirror, an old huggingface_hub: the revision stays as asked
        return None


def _write_records(file: Path, loaded, source: dict[str, Any]) -> None:
    """Write a loaded split as JSONL (images as PNG files beside it) and its source beside it,
    atomically (the source file last: a copy without one is rewritten)."""
    from rlbound.atomic import atomic_write_text

    file.parent.mkdir(parents=True, exist_ok=True)
    images = file.with_suffix("")
    lines = [json.dumps({k: _plain(v, images, f"{i}-{k}") for k, v in record.items()}, default=str)
             for i, record in enumerate(loaded)]
    atomic_write_text(file, "\n".join(lines) + "\n")
    atomic_write_text(_source_file(file), json.dumps(source, indent=2) + "\n")


def _plain(value: Any, images: Path, name: str) -> Any:
    """A JSON-ready value; a PIL image becomes the path of a PNG file written beside the JSONL."""
    if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image (datasets' Image feature)
        images.mkdir(parents=True, exist_ok=True)
        target = images / f"{name}.png"
        value.save(target, format="PNG")
        return str(target.relative_to(images.parent))
    if isinstance(value, bytes):
        import base64

        return {"bytes_base64": base64.b64encode(value).decode()}
    return value


def _source_file(file: Path) -> Path:
    return file.with_name(file.stem + ".source.json")


def _missing(bench: Benchmark, why: str, root: Path | None = None) -> RlboundError:
    root = root or data_folder()
    origin = f" (from {bench.hub.describe()})" if bench.hub else (f" ({bench.no_hub})" if bench.no_hub else "")
    where = f"at {root}/{bench.files[0]}" if root else f"at DIR/{bench.files[0]} and pass --data-dir DIR"
    return RlboundError(f"benchmark {bench.name}: {why}; put its file{origin} {where}, or pass -O path=FILE")


def locate(bench: Benchmark, path: str | None = None, revision: str | None = None,
           root: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The file to read the benchmark from, and the source to record (see the module docstring)."""
    if path:
        file = Path(path)
        if not file.is_file():
            raise RlboundError(f"benchmark {bench.name}: tasks file '{path}' not found")
        return file, {"file": str(file.resolve())}
    folder = data_folder(root)
    found = local_file(bench, folder)
    if found is not None:
        return found, {"file": str(found.resolve())}
    looked = f"no {' or '.join(bench.files)} in {folder}" if folder else f"no data folder (--data-dir or ${DATA_ENV})"
    if bench.hub is None:
        raise _missing(bench, looked, folder)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise _missing(bench, f"{looked}, and the Hugging Face hub is off (HF_HUB_OFFLINE)", folder)
    from_hub = _hub_file(bench, revision, folder)
    if from_hub is None:
        raise _missing(bench, f"{looked}, and the `datasets` package that reads the hub is not installed "
                              "(pip install datasets)", folder)
    return from_hub


def where_from(bench: Benchmark, root: str | Path | None = None) -> str:
    """Where ``bench`` would load from now, in words (for ``rlbound list``)."""
    found = local_file(bench, data_folder(root))
    if found is not None:
        return str(found)
    cached = sorted(cache_root().glob(f"{bench.name}-*.source.json")) if cache_root().is_dir() else []
    if cached:
        return f"{cached[0].name.replace('.source.json', '.jsonl')} (hub copy in {cache_root()})"
    return f"hub: {bench.hub.describe()}" if bench.hub else f"missing ({bench.files[0]} in the data folder)"


def load_benchmark(name: str, path: str | None = None, revision: str | None = None, limit: int | None = None,
                   template: str | None = None, data_dir: str | None = None, **options: Any) -> Task:
    """The benchmark ``name`` as a Task named ``name``, with its source recorded."""
    bench = BENCHMARKS[name]
    file, source = locate(bench, path, revision, data_dir)
    try:
        task = bench.build(file, limit=limit, template=template or bench.template, **{**bench.options, **options})
    except TypeError as exc:
        raise RlboundError(f"benchmark {name}: {exc}") from None
    kept = {k: v for k, v in task.options.items() if k != "path"}
    return dataclasses.replace(task, name=name, options={"benchmark": name, **kept},
                               source={"benchmark": name, **source})


def _register(bench: Benchmark) -> None:
    BENCHMARKS[bench.name] = bench

    def factory(**options: Any) -> Task:
        return load_benchmark(bench.name, **options)

    factory.__name__ = f"{bench.name}_task"
    factory.__doc__ = f"{bench.title} (see rlbound.tasks.benchmarks)."
    register_task(bench.name)(factory)


# --- builders: one local file → Task ---------------------------------------------------------------


def _answers(question: str | None = None, answer: str | None = None, answer_format: str = "auto",
             verifier: str = "math", index_ids: bool = False) -> Callable[..., Task]:
    """A builder over the file task with this field mapping (ids: the file task's id fields, found
    by name, or the record positions with ``index_ids``)."""

    def build(file: Path, limit: int | None = None, template: str = "qwen-boxed", **options: Any) -> Task:
        from rlbound.tasks.files import file_task

        task = file_task(str(file), question_field=options.pop("question_field", question),
                         answer_field=options.pop("answer_field", answer), id_field=options.pop("id_field", None),
                         answer_format=options.pop("answer_format", answer_format), limit=limit,
                         verifier=verifier, template=template, **options)
        if index_ids:  # the benchmark's ids are record positions (GSM8K's line index)
            task = dataclasses.replace(task, problems=tuple(
                dataclasses.replace(p, id=str(i)) for i, p in enumerate(task.problems)))
        return task

    return build


def _code(kind: str) -> Callable[..., Task]:
    def build(file: Path, limit: int | None = None, template: str = "code-complete", **options: Any) -> Task:
        from rlbound.tasks import code

        return getattr(code, kind)(path=str(file), limit=limit, template=template, **options)

    return build


def _vision(kind: str) -> Callable[..., Task]:
    def build(file: Path, limit: int | None = None, template: str = "chat", **options: Any) -> Task:
        from rlbound.tasks import vision

        return getattr(vision, kind)(path=str(file), limit=limit, template=template, **options)

    return build


def _livecodebench(file: Path, limit: int | None = None, template: str = "code-instruct", **options: Any) -> Task:
    from rlbound.tasks.livecodebench import livecodebench_file

    return livecodebench_file(file, limit=limit, template=template, **options)


MATH = "maths (Math-Verify), prompt qwen-boxed"
for _bench in (
    Benchmark("math500", "MATH-500 (Lightman et al. 2023, the PRM800K test split of MATH)",
              ("math/math500_test.jsonl", "math500.jsonl"), _answers(),
              HubSource("HuggingFaceH4/MATH-500", "test"), 500, ids="unique_id"),
    Benchmark("aime24", "AIME 2024 (30 problems)",
              ("math/aime24_matharena.jsonl", "math/aime24_test.qwen25math.jsonl", "aime24.jsonl"),
              _answers(), HubSource("HuggingFaceH4/aime_2024", "train"), 30, ids="id"),
    Benchmark("aime25", "AIME 2025 (30 problems)", ("math/aime25_matharena.jsonl", "aime25.jsonl"),
              _answers(), HubSource("math-ai/aime25", "test"), 30, ids="id"),
    Benchmark("amc23", "AMC 2023 (40 problems, Qwen2.5-Math evaluation set)",
              ("math/amc23_test.qwen25math.jsonl", "amc23.jsonl"), _answers(question="problem"),
              HubSource("math-ai/amc23", "test"), 40, ids="id"),
    Benchmark("minerva", "Minerva maths (272 problems; the answer is the solution's last \\boxed{})",
              ("math/minerva_math_test.qwen25math.jsonl", "minerva.jsonl"), _answers(),
              HubSource("math-ai/minervamath", "test"), 272, ids="idx"),
    Benchmark("olympiadbench", "OlympiadBench (English, text-only, open-ended maths: 675 problems)",
              ("math/olympiadbench_test.qwen25math.jsonl", "olympiadbench.jsonl"),
              _answers(question="question", answer="final_answer"),
              HubSource("Hothan/OlympiadBench", "train", config="OE_TO_maths_en_COMP"), 675, ids="id"),
    Benchmark("gsm8k", "GSM8K test (1319 problems; the answer follows '####')",
              ("math/gsm8k_test.jsonl", "gsm8k.jsonl"), _answers(question="question", answer="answer",
                                                               answer_format="gsm8k", index_ids=True),
              HubSource("openai/gsm8k", "test", config="main"), 1319, ids="line index (0-based)"),
    Benchmark("humaneval", "HumanEval (164 problems; tests: HumanEval+'s base inputs)",
              ("code/HumanEvalPlus.jsonl.gz", "HumanEvalPlus.jsonl.gz"), _code("humaneval"), None, 164,
              "code-complete", "code", "task_id",
              "evalplus's release file HumanEvalPlus-v0.1.10.jsonl.gz: the hub copy lacks the test inputs",
              runs_canonical=True),
    Benchmark("humaneval_plus", "HumanEval+ (164 problems, base + plus inputs)",
              ("code/HumanEvalPlus.jsonl.gz", "HumanEvalPlus.jsonl.gz"), _code("humaneval_plus"), None, 164,
              "code-complete", "code", "task_id",
              "evalplus's release file HumanEvalPlus-v0.1.10.jsonl.gz: the hub copy lacks the test inputs",
              runs_canonical=True),
    Benchmark("mbpp", "MBPP (Austin et al. 2021; test split: task ids 11-510)", ("code/mbpp.jsonl", "mbpp.jsonl"),
              _code("mbpp"), HubSource("google-research-datasets/mbpp", "train+test+validation+prompt",
                                       config="full"), 500, "code-complete", "code", "task_id", runs_canonical=True),
    Benchmark("mbpp_plus", "MBPP+ (base + plus inputs)",
              ("code/MbppPlus.jsonl.gz", "MbppPlus.jsonl.gz", "code/MbppPlus-dev-767efcc.jsonl.gz"),
              _code("mbpp_plus"), None, 378, "code-complete", "code", "task_id",
              "evalplus's release file MbppPlus-v0.2.0.jsonl.gz: the hub copy lacks the test inputs",
              runs_canonical=True),
    Benchmark("livecodebench", "LiveCodeBench code generation (stdin/stdout problems)",
              ("code/livecodebench.jsonl", "livecodebench.jsonl", "code/test5.jsonl"), _livecodebench, None, None,
              "code-instruct", "code", "question_id",
              "a JSONL file of livecodebench/code_generation_lite, e.g. test5.jsonl: the hub copy needs a "
              "loading script that current `datasets` no longer runs"),
    Benchmark("mathvista", "MathVista testmini (1000 items with images; multiple-choice ones dropped by default)",
              ("vision/mathvista_testmini.jsonl", "mathvista_testmini.jsonl", "mathvista.jsonl"),
              _vision("mathvista_task"), HubSource("AI4Math/MathVista", "testmini"), 1000, "chat", ids="pid"),
    Benchmark("mathvision", "MathVision testmini (304 items with images; multiple-choice ones dropped by default)",
              ("vision/mathvision_testmini.jsonl", "mathvision_testmini.jsonl", "mathvision.jsonl"),
              _vision("mathvision_task"), HubSource("MathLLMs/MathVision", "testmini"), 304, "chat", ids="id"),
    Benchmark("simpleqa", "SimpleQA (Wei et al. 2024: 4326 short factual questions)",
              ("qa/simple_qa_test_set.csv", "simple_qa_test_set.csv", "simpleqa.jsonl"),
              _answers(question="problem", answer="answer", answer_format="field", verifier="qa", index_ids=True),
              HubSource("basicv8vc/SimpleQA", "test"), 4326, "qa-short", "qa", "row index (0-based)"),
):
    _register(_bench)
