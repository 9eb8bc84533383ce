"""Benchmarks by name: the registry reads the real files in ../shared/data through --data-dir, the
hub path runs `datasets` on a local dataset folder (no network), a missing benchmark is one line,
and run.json's sha256 of the problems keeps runs on different problems from being compared."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rlbound.errors import RlboundError
from rlbound.tasks.base import load_task, problems_sha256
from rlbound.tasks.benchmarks import BENCHMARKS

# (benchmark, problems, a problem id, its reference answer): the answers are the published ones
# (AIME 2024 I #1 is 204, AIME 2025 I #1 is 70, AMC 2023 #1 is 27, GSM8K's first test problem is
# Janet's ducks, 18), checked by hand against the files.
MATHS = [
    ("math500", 500, "test/precalculus/807.json", r"\left( 3, \frac{\pi}{2} \right)"),
    ("aime24", 30, "2024-I-1", "204"),
    ("aime25", 30, "2025-I-1", "70"),
    ("amc23", 40, "0", "27"),
    ("minerva", 272, "0", "1.6"),
    ("olympiadbench", 675, "1606", "2"),
    ("gsm8k", 1319, "0", "18"),
]


def rlbound(*args, env=None, cwd=None, timeout=180):
    import os

    return subprocess.run([sys.executable, "-m", "rlbound.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("name,size,pid,answer", MATHS)
def test_maths_benchmarks_load_by_name_from_the_data_folder(shared_data, name, size, pid, answer):
    task = load_task(name, data_dir=str(shared_data))
    assert task.name == name and len(task) == size == BENCHMARKS[name].size
    assert task.verifier == "math" and task.template == "qwen-boxed"
    by_id = {p.id: p for p in task.problems}
    assert len(by_id) == size  # the benchmark's own ids, unique
    assert by_id[pid].reference == answer
    assert all(p.prompt.strip() and p.reference for p in task.problems)
    assert task.options["benchmark"] == name and "path" not in task.options
    assert Path(task.source["file"]).is_file() and task.source["benchmark"] == name


@pytest.mark.parametrize("name,first", [("humaneval", "HumanEval/0"), ("humaneval_plus", "HumanEval/0"),
                                        ("mbpp", "Mbpp/11"), ("mbpp_plus", "Mbpp/2")])
def test_code_benchmarks_load_by_name_with_their_ids_and_the_code_verifier(shared_data, name, first):
    task = load_task(name, data_dir=str(shared_data), limit=2)
    assert task.problems[0].id == first and len(task) == 2
    assert task.verifier == "code" and task.template == "code-complete"
    assert json.loads(task.problems[0].reference)["kind"] == "function"


def test_data_env_variable_is_the_default_folder(shared_data, monkeypatch):
    monkeypatch.setenv("RLBOUND_DATA", str(shared_data))
    assert len(load_task("aime25")) == 30


def test_a_missing_benchmark_is_one_line_naming_the_file_and_the_folder(tmp_path):
    result = rlbound("sample", "--task", "aime24", "--model", "x", "-o", tmp_path / "run", "--data-dir", tmp_path,
                     env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rlbound: benchmark aime24:")
    assert f"{tmp_path}/math/aime24_matharena.jsonl" in lines[0] and "HuggingFaceH4/aime_2024" in lines[0]
    result = rlbound("sample", "--task", "humaneval", "--model", "x", "-o", tmp_path / "run", "--data-dir", tmp_path)
    assert "HumanEvalPlus" in result.stderr and result.returncode == 2  # no hub copy: where to get it


def test_the_hub_path_loads_a_local_dataset_folder_through_datasets_and_caches_it(shared_data, tmp_path,
                                                                                 monkeypatch):
    pytest.importorskip("datasets")
    lines = (shared_data / "math" / "math500_test.jsonl").read_text().splitlines()[:7]
    hub = tmp_path / "HuggingFaceH4" / "MATH-500"  # load_dataset("HuggingFaceH4/MATH-500") reads this folder
    hub.mkdir(parents=True)
    (hub / "test.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RLBOUND_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RLBOUND_DATA", raising=False)
    task = load_task("math500")
    assert len(task) == 7 and task.source["hub"] == "HuggingFaceH4/MATH-500" and task.source["split"] == "test"
    local = load_task("math500", path=str(shared_data / "math" / "math500_test.jsonl"), limit=7)
    assert problems_sha256(task.problems) == problems_sha256(local.problems)  # the same problems
    (hub / "test.jsonl").unlink()  # the second load reads the cached copy, not the hub
    again = load_task("math500")
    assert [p.id for p in again.problems] == [p.id for p in task.problems]
    assert "hub copy" in rlbound("list", env={"RLBOUND_CACHE": str(tmp_path / "cache")}, cwd=tmp_path).stdout


def test_list_shows_every_benchmark_with_its_size_and_where_it_loads_from(shared_data):
    result = rlbound("list", "--data-dir", shared_data, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert set(BENCHMARKS) <= set(rows)
    assert "500" in rows["math500"] and "math500_test.jsonl" in rows["math500"]
    assert "hub: AI4Math/MathVista" in rows["mathvista"]


def _maths_folder(root: Path, problems) -> Path:
    """A data folder whose math500 file holds ``problems`` in MATH-500's fields."""
    (root / "math").mkdir(parents=True)
    with open(root / "math" / "math500_test.jsonl", "w") as fh:
        for p in problems:
            fh.write(json.dumps({"problem": p.prompt, "solution": "", "answer": p.reference, "subject": "x",
                                 "level": 1, "unique_id": p.id}) + "\n")
    return root


@pytest.mark.slow
def test_runs_record_the_problems_digest_and_report_refuses_different_problems(exported_arithmetic_model, tmp_path):
    problems = load_task("arithmetic", n=6, difficulty=1).problems
    first = _maths_folder(tmp_path / "a", problems[:3])
    second = _maths_folder(tmp_path / "b", problems[3:])
    model = exported_arithmetic_model["tiny"]
    common = ("--model", model, "--engine", "tiny", "-n", "2", "--max-tokens", "6", "--template", "plain",
              "--verifier", "exact")
    for folder, out in ((first, "run-a"), (second, "run-b"), (first, "run-c")):
        result = rlbound("sample", "--task", "math500", "--data-dir", folder, "-o", tmp_path / out, *common)
        assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "run-a" / "run.json").read_text())
    assert meta["config"]["task"]["sha256"] == problems_sha256(problems[:3])
    assert meta["config"]["task"]["options"]["benchmark"] == "math500"
    assert meta["task_source"]["file"] == str((first / "math" / "math500_test.jsonl").resolve())
    ok = rlbound("report", tmp_path / "run-a", tmp_path / "run-c", "-o", tmp_path / "rep")
    assert ok.returncode == 0, ok.stderr
    bad = rlbound("report", tmp_path / "run-a", tmp_path / "run-b", "-o", tmp_path / "rep2")
    assert bad.returncode == 2 and "different problems" in bad.stderr and "math500" in bad.stderr
    # resuming a run against other problems is refused, naming the digest
    resumed = rlbound("sample", "--task", "math500", "--data-dir", second, "-o", tmp_path / "run-a", *common)
    assert resumed.returncode == 2 and "task.sha256" in resumed.stderr


def test_a_run_recorded_before_the_digest_resumes_and_takes_it(tmp_path):
    from rlbound.store import RunWriter, read_meta

    old = {"task": {"name": "t", "options": {}, "problems": 1}, "template": "raw", "engine": "e", "model": "m",
           "sampling": {}, "seed": 0, "verifier": {"name": "exact", "settings": {}}}
    with RunWriter(tmp_path / "r", old, 1):
        pass
    new = json.loads(json.dumps(old))
    new["task"]["sha256"] = "ab" * 32
    with RunWriter(tmp_path / "r", new, 1):
        pass
    assert read_meta(tmp_path / "r")["config"]["task"]["sha256"] == "ab" * 32


def _lcb_record(qid: str, tests: list[dict], private: list[dict], date: str = "2024-09-01") -> dict:
    packed = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    return {"question_title": f"t{qid}", "question_content": f"Problem {qid}: add two numbers.", "platform": "atcoder",
            "question_id": qid, "contest_id": "abc1", "contest_date": f"{date}T00:00:00", "starter_code": "",
            "difficulty": "easy", "public_test_cases": json.dumps(tests), "private_test_cases": packed,
            "metadata": "{}"}


def test_livecodebench_reads_compressed_private_tests_and_leaves_functional_problems_out(tmp_path):
    stdin = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    records = [
        _lcb_record("abc1_a", stdin, [{"input": "5 6\n", "output": "11\n", "testtype": "stdin"}] * 2),
        _lcb_record("lc_1", [{"input": "[1]", "output": "1", "testtype": "functional"}], []),
        _lcb_record("abc0_a", stdin, [], date="2023-01-01"),
    ]
    file = tmp_path / "test5.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    task = load_task("livecodebench", path=str(file), start_date="2024-08-01")
    assert [p.id for p in task.problems] == ["abc1_a"]
    spec = json.loads(task.problems[0].reference)
    assert spec["kind"] == "stdio" and spec["inputs"] == ["1 2\n", "5 6\n", "5 6\n"] and spec["base"] == 1
    assert task.options["functional_left_out"] == 1 and task.verifier == "code"


def test_livecodebench_refuses_a_pickle_that_names_code(tmp_path):
    evil = _lcb_record("x", [{"input": "1", "output": "1", "testtype": "stdin"}], [])
    evil["private_test_cases"] = base64.b64encode(zlib.compress(pickle.dumps(Path("/etc/passwd")))).decode()
    file = tmp_path / "evil.jsonl"
    file.write_text(json.dumps(evil) + "\n")
    with pytest.raises(RlboundError, match="line 1: private_test_cases is neither JSON"):
        load_task("livecodebench", path=str(file))


def test_simpleqa_reads_the_csv_by_row_index(tmp_path):
    file = tmp_path / "simple_qa_test_set.csv"
    file.write_text('metadata,problem,answer\n"{\'topic\': \'Art\'}","Who painted ""Guernica""?",Pablo Picasso\n'
                    '"{}","In which year did it happen,\nexactly?",1937\n')
    task = load_task("simpleqa", path=str(file))
    assert [(p.id, p.reference) for p in task.problems] == [("0", "Pablo Picasso"), ("1", "1937")]
    assert task.problems[0].prompt == 'Who painted "Guernica"?' and task.verifier == "qa"
    assert task.template == "qa-short"
