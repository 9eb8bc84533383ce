"""Code tasks: HumanEval(+), MBPP(+) and stdin/stdout problem files, graded by the code verifier.

Task builders (each takes ``path``, the benchmark file; the names ``humaneval``, ``humaneval_plus``,
``mbpp`` and ``mbpp_plus`` are registered by :mod:`rlbound.tasks.benchmarks`, which finds the file):

* ``humaneval`` / ``humaneval_plus``: ``HumanEvalPlus.jsonl.gz`` (evalplus's release). ``humaneval``
  grades on the base inputs, which are the original HumanEval tests' inputs, held as data;
  ``humaneval_plus`` on base + plus inputs and records the base verdict beside it. The original
  ``HumanEval.jsonl.gz`` holds its tests as executable ``assert`` code, whose verdict would be
  decided inside the program's own process (forgeable), so rlbound takes HumanEval's tests from
  HumanEval+'s ``base_input``; the prompts are the same (163 of 164 verbatim, one fixed).
* ``mbpp``: the original ``mbpp.jsonl`` (``split`` test by default: task ids 11-510), its three
  ``assert f(args) == expected`` tests taken as data (see :func:`original_mbpp`); given an MBPP+
  file instead, MBPP+'s base inputs.
* ``mbpp_plus``: ``MbppPlus*.jsonl.gz``, base + plus inputs, like HumanEval+. The prompt is evalplus's: the
  description and the first base assertion as a docstring (it names the function). Inputs are
  turned back into tuples, sets and complex numbers where evalplus does
  (``mbpp_deserialize_inputs``). A development snapshot (a file name with ``-dev-``) is flagged
  in each problem's metadata (``dev_snapshot``) and warned about on loading: fine for tests, not
  for reporting MBPP+ numbers.
* ``code_stdio``: a JSONL file of ``{"id", "prompt", "tests": [{"input", "output"}]}``
  (LiveCodeBench / CodeContests style; ``public_tests`` leading tests form the base subset; field
  names mappable with ``-O``).

Expected outputs of function tasks are never in the files: they are computed by running the
trusted canonical solution once, through the same harness and sandbox as any program, and cached
in ``$RLBOUND_CACHE`` (default ``~/.cache/rlbound``) under ``code-expected/``, keyed by the
problem, its inputs, the harness version and the sandbox's Python. An input on which the
canonical solution itself fails is dropped (counted in the problem's metadata). Each problem's
reference is the test spec that :mod:`rlbound.verify.code` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlbound.atomic import atomic_write_text
from rlbound.errors import RlboundError
from rlbound.progress import note, progress
from rlbound.tasks.base import Problem, Task, register_task
from rlbound.tasks.files import _read_records

HUMANEVAL_PLUS_FILE = "HumanEvalPlus.jsonl.gz"
MBPP_PLUS_FILE = "MbppPlus.jsonl.gz"
MBPP_FILE = "mbpp.jsonl"

# Which MBPP+ tasks take tuples, sets or complex numbers that JSON stored as lists and strings
# (a fact about the benchmark, from evalplus/data/mbpp.py ``mbpp_deserialize_inputs``).
_TUPLE_ARGS = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630,
               726, 740, 744, 809}
_TUPLE_IN_LISTS = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_FIRST_LIST_OF_TUPLES = {75, 413, 444, 753}
_SECOND_TUPLE = {106, 750}
_FIRST_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_NESTED_TUPLES = {259, 401, 445}
_ALL_TUPLES = {580, 615, 791}


def _deep_tuple(value: Any) -> Any:
    return tuple(_deep_tuple(v) for v in value) if isinstance(value, list) else value


def mbpp_inputs(task_number: int, inputs: list) -> list:
    """MBPP+ inputs as evalplus passes them (see ``_TUPLE_ARGS`` and friends)."""
    n = task_number
    if n in _TUPLE_ARGS:
        return [[tuple(a) for a in inp] for inp in inputs]
    if n in _TUPLE_IN_LISTS:
        return [[[tuple(x) for x in a] for a in inp] for inp in inputs]
    if n in _FIRST_LIST_OF_TUPLES:
        return [[[tuple(x) for x in inp[0]], inp[1]] for inp in inputs]
    if n in _SECOND_TUPLE:
        return [[inp[0], tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(x) if isinstance(x, list) and x else {} for x in inp[0]]] for inp in inputs]
    if n == 124:
        return [[float(inp[0]), complex(inp[1])] for inp in inputs]
    if n in _FIRST_TUPLE:
        return [[tuple(inp[0]), *inp[1:]] for inp in inputs]
    if n in _NESTED_TUPLES:
        return [[tuple(tuple(x) for x in a) for a in inp] for inp in inputs]
    if n == 278:
        return [[tuple(tuple(x) if isinstance(x, list) else x for x in inp[0])] for inp in inputs]
    if n == 307:
        return [[tuple(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in _ALL_TUPLES:
        return [list(_deep_tuple(inp)) for inp in inputs]
    return inputs


def cache_dir() -> Path:
    """Where rlbound keeps what it can recompute (``$RLBOUND_CACHE``, else ``~/.cache/rlbound``)."""
    return Path(os.environ.get("RLBOUND_CACHE") or Path.home() / ".cache" / "rlbound")


def _data_file(path: str | None, filename: str, task: str) -> Path:
    if not path:
        raise RlboundError(f"task {task} needs its file: pass -O path=FILE" + (f" ({filename})" if filename else ""))
    file = Path(path)
    if not file.is_file():
        raise RlboundError(f"tasks file '{path}' not found")
    return file


# --- expected outputs ----------------------------------------------------------------------------


def _expected_key(dataset: str, entry_point: str, program: str, inputs: list) -> str:
    from rlbound.verify.code import sandbox_python_version
    from rlbound.verify.code_harness import HARNESS_VERSION

    blob = json.dumps([HARNESS_VERSION, sandbox_python_version(), dataset, entry_point, program, inputs])
    return hashlib.sha256(blob.encode()).hexdigest()


def canonical_outputs(dataset: str, entry_point: str, program: str, inputs: list,
                      sandbox: bool = True) -> dict:
    """``{"expected", "times", "errors"}`` of the canonical ``program`` on ``inputs`` (encoded
    argument lists), from the cache or by running it once."""
    from rlbound.verify.code import not_none_outputs, read_frames, run_harness
    from rlbound.verify.sandbox import SandboxLimits

    file = cache_dir() / "code-expected" / f"{_expected_key(dataset, entry_point, program, inputs)}.json"
    if file.is_file():
        try:
            return json.loads(file.read_text())
        except ValueError:
            pass  # a damaged entry: compute it again
    limits = SandboxLimits(wall_s=300.0, memory_bytes=2 * 2**30, output_bytes=256 * 2**20, disk_bytes=256 * 2**20)
    job = {"mode": "function", "program": program, "entry_point": entry_point, "inputs": inputs,
           "input_timeouts": [60.0] * len(inputs), "not_none": not_none_outputs(dataset, entry_point)}
    result, nonce = run_harness(job, limits, sandbox)
    per_input, header, forged = read_frames(result.stdout, nonce, result.truncated)
    if forged or not header.get("loaded"):
        why = forged or header.get("load_error") or f"{result.status}: {result.stderr.decode(errors='replace')[-300:]}"
        raise RlboundError(f"the canonical solution of {entry_point} does not run: {why}")
    expected, times, errors = [], [], {}
    for i in range(len(inputs)):
        record = per_input.get(i, {})
        if "out" in record:
            expected.append(record["out"])
            times.append(float(record.get("t", 0.0)))
        else:
            expected.append(None)
            times.append(0.0)
            errors[str(i)] = record.get("exc") or record.get("bad") or ("timeout" if record.get("timeout") else result.status)
    entry = {"expected": expected, "times": times, "errors": errors}
    if result.status != "sandbox_error":
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(file, json.dumps(entry))
    return entry


def _canonical_all(items: list[dict], sandbox: bool, label: str) -> list[dict]:
    """:func:`canonical_outputs` of every item's ``program`` on its ``inputs``, in parallel."""
    def one(item: dict) -> dict:
        return canonical_outputs(item["dataset"], item["entry_point"], item["program"], item["inputs"], sandbox)

    with progress(f"{label}: canonical outputs (computed once, then cached)", total=len(items),
                  unit="problems") as bar, ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1)) as pool:
        results = []
        for entry in pool.map(one, items):
            results.append(entry)
            bar.advance(1)
    return results


def _function_specs(items: list[dict], sandbox: bool, label: str) -> list[dict]:
    """Fill each item's ``expected``/``times``; drop inputs the canonical solution fails on."""
    for item, entry in zip(items, _canonical_all(items, sandbox, label)):
        keep = [i for i, e in enumerate(entry["expected"]) if str(i) not in entry["errors"]]
        item["dropped"] = len(item["inputs"]) - len(keep)
        item["base"] = sum(1 for i in keep if i < item["n_base"]) if item["n_base"] is not None else None
        item["inputs"] = [item["inputs"][i] for i in keep]
        item["expected"] = [entry["expected"][i] for i in keep]
        item["times"] = [entry["times"][i] for i in keep]
    return items


def _spec_json(item: dict) -> str:
    return json.dumps({k: item[k] for k in ("kind", "dataset", "entry_point", "prompt", "inputs", "expected",
                                             "base", "atol", "times")}, separators=(",", ":"))


# --- evalplus-format tasks -----------------------------------------------------------------------


def _first_assertion(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip().startswith("assert")), "")


def evalplus_task(name: str, dataset: str, default_file: str, plus: bool, path: str | None,
                  limit: int | None, template: str, sandbox: bool) -> Task:
    """HumanEval+ / MBPP+ problems (see the module docstring)."""
    from rlbound.verify.code_harness import encode_value

    file = _data_file(path, default_file, name)
    items = []
    for lineno, record in _read_records(file):
        where = f"tasks file '{file}' line {lineno}"
        missing = [k for k in ("task_id", "prompt", "entry_point", "canonical_solution", "base_input")
                   if k not in record]
        if missing:
            raise RlboundError(f'{where}: missing field "{missing[0]}" (is this an evalplus file?)')
        base_in, plus_in = record["base_input"], record.get("plus_input") or []
        if dataset == "mbpp":
            number = int(str(record["task_id"]).split("/")[-1])
            base_in, plus_in = mbpp_inputs(number, base_in), mbpp_inputs(number, plus_in)
            description = record["prompt"].strip().strip("'\"").strip()
            prompt = f'"""\n{description}\n{_first_assertion(record.get("assertion", ""))}\n"""\n'
            program = record["canonical_solution"]
        else:
            prompt = record["prompt"]
            program = record["prompt"] + record["canonical_solution"]
        inputs = [encode_value(list(a)) for a in base_in + (plus_in if plus else [])]
        items.append({"kind": "function", "dataset": dataset, "id": str(record["task_id"]),
                      "entry_point": record["entry_point"], "prompt": prompt if dataset == "humaneval" else "",
                      "question": prompt, "program": program, "inputs": inputs,
                      "n_base": len(base_in) if plus else None, "atol": float(record.get("atol") or 0.0)})
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise RlboundError(f"tasks file '{file}' holds no problems")
    _function_specs(items, sandbox, name)
    empty = [it["id"] for it in items if not it["inputs"]]
    if empty:
        note(f"[yellow]warning:[/] {len(empty)} problems left out: their canonical solution fails on every "
             f"input ({', '.join(empty[:5])})")
        items = [it for it in items if it["inputs"]]
    dev = "-dev-" in file.name
    if dev:
        note(f"[yellow]warning:[/] {file.name} is a development snapshot of MBPP+: fine for tests, not for reporting MBPP+ numbers")
    problems = tuple(Problem(it["id"], it["question"], _spec_json(it),
                             {"entry_point": it["entry_point"], "inputs": len(it["inputs"]),
                              "base_inputs": it["base"], "dropped_inputs": it["dropped"], "dev_snapshot": dev})
                     for it in items)
    return Task(name=name, problems=problems, verifier="code", template=template,
                options={"path": str(file.resolve()), "limit": limit})


def humaneval(path: str | None = None, limit: int | None = None, template: str = "code-complete",
              sandbox: bool = True) -> Task:
    return evalplus_task("humaneval", "humaneval", HUMANEVAL_PLUS_FILE, False, path, limit, template, sandbox)


def humaneval_plus(path: str | None = None, limit: int | None = None, template: str = "code-complete",
                   sandbox: bool = True) -> Task:
    return evalplus_task("humaneval_plus", "humaneval", HUMANEVAL_PLUS_FILE, True, path, limit, template, sandbox)


def mbpp(path: str | None = None, limit: int | None = None, template: str = "code-complete",
         sandbox: bool = True, split: str = "test") -> Task:
    """MBPP: the original file (``mbpp.jsonl``, the default) or MBPP+'s base inputs."""
    file = _data_file(path, MBPP_FILE, "mbpp")
    first = next((record for _, record in _read_records(file)), {})
    if "base_input" in first:
        return evalplus_task("mbpp", "mbpp", MBPP_PLUS_FILE, False, str(file), limit, template, sandbox)
    return original_mbpp(file, limit, template, split, sandbox)


MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974), "all": (1, 10**9)}


def _assert_case(test: str) -> tuple[str, list, Any] | None:
    """``assert f(literal, ...) == literal`` as (f, arguments, expected), else None."""
    import ast

    try:
        node = ast.parse(test.strip()).body[0]
        compare = node.test
        call = compare.left
        if not (isinstance(node, ast.Assert) and isinstance(compare, ast.Compare) and len(compare.ops) == 1
                and isinstance(compare.ops[0], ast.Eq) and isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name) and not call.keywords):
            return None
        return call.func.id, [ast.literal_eval(a) for a in call.args], ast.literal_eval(compare.comparators[0])
    except (SyntaxError, ValueError, TypeError, AttributeError, IndexError, RecursionError, MemoryError):
        return None


def original_mbpp(file: Path, limit: int | None, template: str, split: str, sandbox: bool = True) -> Task:
    """The original MBPP (Austin et al. 2021): its prompt, its three tests as data.

    The prompt is the paper's ("You are an expert Python programmer, and here is your task: …
    Your code should pass these tests: …"). Each test ``assert f(args) == expected`` becomes an
    input and its expected output, compared with the same rules as MBPP+'s; a problem whose tests
    are not all of that form (a tree built in setup code, an argument computed at run time) is
    left out, with a warning naming it. The reference solution (``code``) is run once, like a
    canonical one, only for its times, which set the time limits (Mbpp/123's takes seconds).
    """
    from rlbound.verify.code_harness import encode_value

    if split not in MBPP_SPLITS:
        raise RlboundError(f"mbpp split must be one of {', '.join(MBPP_SPLITS)}, got {split!r}")
    low, high = MBPP_SPLITS[split]
    items, left_out = [], []
    for lineno, record in _read_records(file):
        missing = [k for k in ("task_id", "text", "test_list") if k not in record]
        if missing:
            raise RlboundError(f'tasks file \'{file}\' line {lineno}: missing field "{missing[0]}"')
        if not low <= int(record["task_id"]) <= high:
            continue
        cases = [_assert_case(t) for t in record["test_list"]]
        names = {c[0] for c in cases if c}
        if not cases or None in cases or len(names) != 1 or record.get("test_setup_code", "").strip():
            left_out.append(str(record["task_id"]))
            continue
        tests = "\n".join(t.strip() for t in record["test_list"])
        question = (f"You are an expert Python programmer, and here is your task: {record['text']} "
                    f"Your code should pass these tests:\n\n{tests}\n")
        items.append({"kind": "function", "dataset": "mbpp", "id": f"Mbpp/{record['task_id']}",
                      "entry_point": names.pop(), "prompt": "", "question": question,
                      "program": record.get("code") or "", "inputs": [encode_value(c[1]) for c in cases],
                      "expected": [encode_value(c[2]) for c in cases], "base": None, "atol": 0.0})
        if limit is not None and len(items) >= limit:
            break
    if left_out:
        note(f"[yellow]warning:[/] mbpp: {len(left_out)} problems left out, their tests are not all "
             f"`assert f(literal arguments) == literal`: {', '.join(left_out[:10])}")
    if not items:
        raise RlboundError(f"tasks file '{file}' holds no MBPP problems in split {split!r}")
    for item, entry in zip(items, _canonical_all(items, sandbox, "mbpp")):
        item["times"] = entry["times"]
    problems = [Problem(it["id"], it["question"], _spec_json(it), {"entry_point": it["entry_point"],
                                                                    "inputs": len(it["inputs"])})
                for it in items]
    return Task(name="mbpp", problems=tuple(problems), verifier="code", template=template,
                options={"path": str(file.resolve()), "limit": limit, "split": split})


def mbpp_plus(path: str | None = None, limit: int | None = None, template: str = "code-complete",
              sandbox: bool = True) -> Task:
    return evalplus_task("mbpp_plus", "mbpp", MBPP_PLUS_FILE, True, path, limit, template, sandbox)


# --- stdin/stdout tasks --------------------------------------------------------------------------


def stdio_problem(pid: str, prompt: str, tests: list[tuple[str, str]], n_public: int,
                  time_limit_s: float | None, metadata: dict[str, Any] | None = None) -> Problem:
    """A stdin/stdout problem: ``tests`` are (input, expected output) pairs, the first
    ``n_public`` of them the base subset (none when 0)."""
    spec = {"kind": "stdio", "inputs": [t[0] for t in tests], "expected": [t[1] for t in tests],
            "base": n_public or None, "time_limit_s": time_limit_s}
    return Problem(pid, prompt, json.dumps(spec), {"tests": len(tests), **(metadata or {})})


@register_task("code_stdio")
def code_stdio(path: str, id_field: str = "id", prompt_field: str = "prompt", tests_field: str = "tests",
               public_tests_field: str | None = "public_tests", input_field: str = "input",
               output_field: str = "output", time_limit_s: float | None = None, limit: int | None = None,
               template: str = "code-instruct") -> Task:
    """Problems with standard-input/standard-output tests (see the module docstring)."""
    file = _data_file(path, "", "code_stdio")
    problems, seen = [], {}
    for lineno, record in _read_records(file):
        where = f"tasks file '{path}' line {lineno}"
        if not isinstance(record, dict):
            raise RlboundError(f"{where}: expected a JSON object")
        for key in (id_field, prompt_field):
            if key not in record:
                raise RlboundError(f'{where}: missing field "{key}"')
        public = list(record.get(public_tests_field) or []) if public_tests_field else []
        tests = public + list(record.get(tests_field) or [])
        if not tests:
            raise RlboundError(f'{where}: no tests (field "{tests_field}")')
        for j, test in enumerate(tests):
            if not isinstance(test, dict) or input_field not in test or output_field not in test:
                raise RlboundError(f'{where}: test {j} needs the fields "{input_field}" and "{output_field}"')
        pid = str(record[id_field])
        if pid in seen:
            raise RlboundError(f"{where}: duplicate problem id {pid!r} (first at line {seen[pid]})")
        seen[pid] = lineno
        problems.append(stdio_problem(pid, str(record[prompt_field]), [(str(t[input_field]), str(t[output_field]))
                                                                    for t in tests], len(public), time_limit_s))
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise RlboundError(f"tasks file '{path}' holds no problems")
    return Task(name=f"code_stdio:{file.name}", problems=tuple(problems), verifier="code", template=template,
                options={"path": str(file.resolve()), "id_field": id_field, "prompt_field": prompt_field,
                         "tests_field": tests_field, "public_tests_field": public_tests_field,
                         "input_field": input_field, "output_field": output_field,
                         "time_limit_s": time_limit_s, "limit": limit})
