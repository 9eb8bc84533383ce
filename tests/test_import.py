"""rlbound import: lm-eval, evalplus, verl and plain JSONL samples files (each written here in its
tool's own field layout) become graded runs that report; re-importing adds nothing; bad lines are
one-line errors naming the line."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlbound.errors import RlboundError
from rlbound.importer import import_samples, read_samples_file
from rlbound.store import load_run, read_meta, read_samples
from rlbound.tasks.base import load_task
from rlbound.verify.base import load_verifier

pytestmark = pytest.mark.usefixtures("quiet")

QUESTIONS = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
     "How many clips did Natalia sell altogether in April and May?", "72"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?", "10"),
    ("Add 2 and 3.", "5"),
    ("Add 2 and 3. Then double the result.", "10"),
]
HE_PLUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "code" / "HumanEvalPlus.jsonl.gz"


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def gsm_task(tmp_path):
    """A GSM8K-like tasks file (idx, question, answer ending in '#### N') and its task."""
    rows = [{"idx": i, "question": q, "answer": f"Some working.\n#### {a}"} for i, (q, a) in enumerate(QUESTIONS)]
    path = _write_jsonl(tmp_path / "gsm.jsonl", rows)
    return load_task("file", path=str(path))


def _import(file, task, out, **kw):
    return import_samples(file, task, load_verifier(task.verifier), out, **kw)


def _rows(run) -> list[dict]:
    return sorted(read_samples(run).to_pylist(), key=lambda r: (r["problem_id"], r["sample_idx"]))


def _graded(run) -> list[tuple]:
    """Each row's key, text and verdict (the log-prob columns are NaN, which never compares equal)."""
    return [(r["problem_id"], r["sample_idx"], r["completion"], r["answer"], r["correct"]) for r in _rows(run)]


def test_plain_jsonl_records_unknowns_and_reimport_adds_nothing(gsm_task, tmp_path):
    file = _write_jsonl(tmp_path / "mine.jsonl", [
        {"meta": {"pid": "0"}, "text": "48 + 24 = 72, so \\boxed{72}"},
        {"meta": {"pid": "0"}, "text": "\\boxed{71}"},
        {"meta": {"pid": "1"}, "text": "I think \\boxed{10}"},
        {"meta": {"pid": "0"}, "text": "no answer here"},
    ])
    out = tmp_path / "run"
    result = _import(file, gsm_task, out, fmt="jsonl", id_field="meta.pid", completion_field="text",
                     model_name="my-model", shard_samples=2)
    assert (result.imported, result.already_present, result.problems, result.missing_problems) == (4, 0, 2, 2)
    rows, graded = _rows(out), _graded(out)
    assert [(r["problem_id"], r["sample_idx"], r["correct"]) for r in rows] == [
        ("0", 0, True), ("0", 1, False), ("0", 2, False), ("1", 0, True)]
    assert rows[2]["verify_status"] == "no_answer"
    for r in rows:  # what the file does not say is recorded as unknown
        assert r["seed"] is None and r["token_count"] is None and r["finish_reason"] is None
        assert np.isnan(r["logprob_sum"]) and np.isnan(r["logprob_mean"]) and r["entropy_mean"] is None
    meta = read_meta(out)
    assert meta["config"]["engine"] == "import" and meta["config"]["model"] == "my-model"
    assert meta["config"]["sampling"] is None and meta["config"]["seed"] is None
    assert meta["config"]["template"] == gsm_task.template and meta["imports"][0]["template_given"] is False
    assert meta["imports"][0]["offsets"] == {"0": 0, "1": 0} and "finished" in meta["imports"][0]

    # The same file again, or the same content elsewhere: nothing is written twice.
    again = _import(file, gsm_task, out, fmt="jsonl", id_field="meta.pid", completion_field="text", model_name="my-model")
    assert (again.imported, again.already_present) == (0, 4)
    copy = Path(shutil.copy(file, tmp_path / "copy.jsonl"))
    assert _import(copy, gsm_task, out, id_field="meta.pid", completion_field="text", model_name="my-model").imported == 0
    assert _graded(out) == graded

    # An interrupted import (a shard lost) is completed with the same sample indices.
    shards = sorted((out / "samples").glob("part-*.parquet"))
    assert len(shards) == 2
    shards[0].unlink()
    refill = _import(file, gsm_task, out, id_field="meta.pid", completion_field="text", model_name="my-model")
    assert refill.imported == 2 and _graded(out) == graded

    # Another file's samples come after those stored; another model name is another run.
    more = _write_jsonl(tmp_path / "more.jsonl", [{"meta": {"pid": "1"}, "text": "\\boxed{11}"}])
    assert _import(more, gsm_task, out, id_field="meta.pid", completion_field="text", model_name="my-model").imported == 1
    assert [(r["problem_id"], r["sample_idx"]) for r in _rows(out)][-2:] == [("1", 0), ("1", 1)]
    assert len(read_meta(out)["imports"]) == 2
    with pytest.raises(RlboundError, match=r"other settings \(model: the run has 'my-model'"):
        _import(more, gsm_task, out, id_field="meta.pid", completion_field="text", model_name="other")


def _lm_eval_line(doc_id: int, filt: str, resps: list[str], gen_kwargs: dict) -> dict:
    """One line of lm-eval's samples_<task>_<date>.jsonl (lm-eval >= 0.4.3 layout)."""
    question, answer = QUESTIONS[doc_id]
    doc = {"question": question, "answer": f"Some working.\n#### {answer}"}
    prompt = f"Question: {question}\nAnswer:"
    return {
        "doc_id": doc_id, "doc": doc, "target": doc["answer"],
        "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": gen_kwargs}},
        "resps": [resps], "filtered_resps": [resps[0][-2:]], "filter": filt, "metrics": ["exact_match"],
        "doc_hash": "d" * 64, "prompt_hash": "p" * 64, "target_hash": "t" * 64, "exact_match": 0.0,
    }


def test_lm_eval_log_samples(gsm_task, tmp_path):
    kwargs = {"until": ["Question:", "</s>"], "do_sample": True, "temperature": 0.7}
    gens = {0: ["So \\boxed{72}.", "So \\boxed{70}.", "So \\boxed{72}."], 1: ["It is \\boxed{10}", "\\boxed{12}", "x"]}
    lines = [_lm_eval_line(d, f, g, kwargs) for f in ("strict-match", "flexible-extract") for d, g in gens.items()]
    file = _write_jsonl(tmp_path / "samples_gsm8k_2025-01-01T00-00-00.jsonl", lines)
    result = _import(file, gsm_task, tmp_path / "run", model_name="org/model")
    assert result.fmt == "lm-eval" and result.imported == 6 and result.skipped_lines == 2  # one filter's lines
    rows = _rows(tmp_path / "run")
    assert [r["completion"] for r in rows] == gens[0] + gens[1]
    assert [r["correct"] for r in rows] == [True, False, True, True, False, False]
    entry = read_meta(tmp_path / "run")["imports"][0]
    assert entry["format"] == "lm-eval" and entry["id_field"] == "doc_id"
    assert entry["recorded"]["generation_kwargs"] == kwargs

    # Ids that are not the task's: the error names the line and the field that holds them.
    for line in lines:
        line["doc"]["unique_id"] = str(line["doc_id"])
        line["doc_id"] += 100
    renumbered = _write_jsonl(tmp_path / "samples_b.jsonl", lines)
    with pytest.raises(RlboundError, match=r"samples_b.jsonl' line 1: problem id '100' is not in task .*"
                                           r"--id-field doc.unique_id"):
        read_samples_file(renumbered, gsm_task)
    assert len(read_samples_file(renumbered, gsm_task, id_field="doc.unique_id").samples) == 6
    # A log-likelihood task (multiple choice) holds scores, not completions.
    mc = dict(lines[0], resps=[[["-3.2", "False"]], [["-4.1", "False"]]])
    with pytest.raises(RlboundError, match="line 1: .*log-likelihood scores"):
        read_samples_file(_write_jsonl(tmp_path / "samples_mc.jsonl", [mc]), gsm_task, id_field="doc.unique_id")


def test_verl_generations_dump_matched_by_question(gsm_task, tmp_path):
    def line(q: int, output: str, score: float) -> dict:  # verl's _dump_generations fields
        prompt = ("system\nPlease reason step by step, and put your final answer within \\boxed{}.\nuser\n"
                  f"{QUESTIONS[q][0]}\nassistant\n")
        return {"input": prompt, "output": output, "gts": QUESTIONS[q][1], "score": score, "step": 40, "acc": score > 0}

    file = _write_jsonl(tmp_path / "40.jsonl", [
        line(3, "5 * 2 = \\boxed{10}", 1.0), line(2, "\\boxed{5}", 1.0), line(3, "\\boxed{5}", 0.0), line(0, "\\boxed{72}", 1.0)])
    result = _import(file, gsm_task, tmp_path / "run")
    assert result.fmt == "verl" and result.imported == 4
    got = [(r["problem_id"], r["sample_idx"], r["correct"]) for r in _rows(tmp_path / "run")]
    # "Add 2 and 3." is inside problem 3's question too: the longest question found wins
    assert got == [("0", 0, True), ("2", 0, True), ("3", 0, True), ("3", 1, False)]
    entry = read_meta(tmp_path / "run")["imports"][0]
    assert entry["id_field"] == "matched by question" and entry["recorded"]["steps"] == [40]
    stray = _write_jsonl(tmp_path / "41.jsonl", [line(0, "x", 0.0), {**line(0, "x", 0.0), "input": "user\nsomething else"}])
    with pytest.raises(RlboundError, match="41.jsonl' line 2: no question of task"):
        read_samples_file(stray, gsm_task)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.skipif(not HE_PLUS.is_file(), reason=f"benchmark data not found at {HE_PLUS}")
def test_evalplus_samples_graded_by_the_code_verifier(tmp_path, monkeypatch):
    monkeypatch.setenv("RLBOUND_CACHE", str(tmp_path / "cache"))
    with gzip.open(HE_PLUS, "rt") as fh:
        first, second = (json.loads(line) for line, _ in zip(fh, range(2)))
    task = load_task("humaneval", path=str(HE_PLUS), limit=2)
    file = _write_jsonl(tmp_path / "samples.jsonl", [  # evalplus codegen: a solution or a completion per line
        {"task_id": first["task_id"], "solution": first["prompt"] + first["canonical_solution"]},
        {"task_id": first["task_id"], "completion": first["canonical_solution"]},
        {"task_id": second["task_id"], "solution": second["prompt"] + "    return []\n"},
    ])
    result = _import(file, task, tmp_path / "run", model_name="codegen")
    assert result.fmt == "evalplus" and result.imported == 3
    assert [(r["problem_id"], r["correct"]) for r in _rows(tmp_path / "run")] == [
        (first["task_id"], True), (first["task_id"], True), (second["task_id"], False)]


def test_imported_runs_make_a_report(gsm_task, tmp_path):
    from rlbound.report.html import write_report

    for name, answers in (("a", ["72", "70", "10", "10"]), ("b", ["72", "72", "9", "9"])):
        rows = [{"problem_id": str(i // 2), "completion": f"\\boxed{{{a}}}"} for i, a in enumerate(answers)]
        _import(_write_jsonl(tmp_path / f"{name}.jsonl", rows), gsm_task, tmp_path / name, model_name=name)
    runs = [load_run(tmp_path / name).samples for name in ("a", "b")]
    write_report(runs, tmp_path / "report")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    pass1 = {r["label"]: next(p["mean"] for p in r["pass_at_k"] if p["k"] == 1) for r in results["runs"]}
    assert pass1 == pytest.approx({"a": (0.5 + 1.0) / 2, "b": (1.0 + 0.0) / 2})
    assert all(r["engine"] == "import" for r in results["runs"])
    assert "unknown" in results["reasoning_patterns"][0]["note"]  # no token counts to rate markers by


def test_bad_lines_are_one_line_errors(gsm_task, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem_id": "0", "completion": "x"}\n{"problem_id": oops}\n')
    with pytest.raises(RlboundError, match=r"^samples file 'bad.jsonl' line 2: invalid JSON"):
        read_samples_file(bad, gsm_task)
    unknown = _write_jsonl(tmp_path / "unknown.jsonl", [{"problem_id": "0", "completion": "x"}] * 2
                           + [{"problem_id": "nope", "completion": "x"}])
    with pytest.raises(RlboundError, match=r"unknown.jsonl' line 3: problem id 'nope' is not in task 'file:gsm.jsonl'"):
        read_samples_file(unknown, gsm_task)
    missing = _write_jsonl(tmp_path / "missing.jsonl", [{"problem_id": "0", "answer": "x"}])
    with pytest.raises(RlboundError, match=r"line 1: missing field \"completion\""):
        read_samples_file(missing, gsm_task)
    with pytest.raises(RlboundError, match="unknown samples format 'csv'"):
        read_samples_file(missing, gsm_task, fmt="csv")
    with pytest.raises(RlboundError, match="holds no samples"):
        read_samples_file(_write_jsonl(tmp_path / "empty.jsonl", []), gsm_task)

    # Through the command: one line on stderr, nothing written; a good file imports.
    cmd = [sys.executable, "-m", "rlbound.cli", "import", "--task", gsm_task.options["path"], "--out", tmp_path / "run"]
    done = subprocess.run([*map(str, cmd), str(unknown)], capture_output=True, text=True, timeout=120)
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("rlbound: samples file 'unknown.jsonl' line 3: problem id 'nope'")
    assert not (tmp_path / "run").exists()
    good = _write_jsonl(tmp_path / "good.jsonl", [{"problem_id": "0", "completion": "\\boxed{72}"}])
    done = subprocess.run([*map(str, cmd), str(good)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "1 samples imported (jsonl, 1 problems)" in done.stdout, done.stderr
