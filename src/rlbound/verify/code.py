"""The code verifier: run a model's program on a problem's test inputs in the sandbox, and decide
the verdict outside it.

A code problem's reference is a *test spec* (JSON, built by :mod:`rlbound.tasks.code`):

* ``kind="function"`` (HumanEval+/MBPP+ style): ``entry_point``, ``prompt`` (the code a
  completion continues, or ""), ``inputs`` (argument lists, encoded by
  :mod:`rlbound.verify.code_harness`), ``expected`` (the outputs of the trusted canonical solution,
  computed once and cached by the task), ``times`` (the canonical solution's seconds per input),
  ``atol``, ``dataset`` (``humaneval``, ``mbpp`` or ``generic``: which special oracles apply) and
  ``base`` (how many leading inputs are the benchmark's base tests, or None);
* ``kind="stdio"`` (LiveCodeBench / CodeContests style): ``inputs`` (standard input per test),
  ``expected`` (its standard output), ``base`` (the public tests, leading).

Only the inputs enter the sandbox (:mod:`rlbound.verify.code_harness` runs there); the comparison
happens here, on plain data decoded from the program's result frames, with the rules of
:mod:`rlbound.verify.code_compare` (evalplus's for function outputs, every line for standard
output).

Statuses, input by input in order, the first that is not a pass deciding: ``fail`` (a wrong or
non-plain-data output, or a repeated or malformed result frame), ``error`` (the program did not
load, raised, or ended before its last input), ``timeout`` (an input's deadline, or the run's),
``memory``, ``output_limit``, ``sandbox_error``. A run whose results are all there and all
right is a ``pass``, whatever its exit status; no exit status ever makes one. In a
:class:`~rlbound.verify.base.CheckResult` ``pass``/``fail`` are ``ok`` with ``correct`` true or
false; ``correct_base`` is the verdict on the base tests alone.

Time limits: each input may take ``max(min_input_s, time_factor × the canonical time)``; the whole
run ``wall_s + time_factor × the canonical total`` (at most ``max_wall_s``). ``sandbox=False``
(``--unsafe-no-sandbox``) runs the same harness as a plain child process, for trusted code only.

Answers: a sample's ``answer`` is its program in normalised form
(:func:`~rlbound.verify.code_extract.normalise_program`: comments and layout dropped), which is
what runs and what the verdict cache keys on. So answer diversity and maj@k count distinct
normalised programs: a syntactic measure, an upper bound on how many behaviours were sampled
(two programs that differ only in a variable name count twice).

What it does not do: numpy values, class instances and other non-builtin outputs are failures
(evalplus compares some of those with ``==``); a model's program that needs packages outside the
standard library of ``/usr/bin/python3`` fails to load.
"""

from __future__ import annotations

import ast
import json
import marshal
import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rlbound.errors import RlboundError
from rlbound.verify.base import (
    STATUS_ERROR,
    STATUS_OK,
    STATUS_SANDBOX_ERROR,
    STATUS_TIMEOUT,
    CheckResult,
    Verifier,
    register_verifier,
)
from rlbound.verify import code_harness
from rlbound.verify.code_harness import FRAME_MARK, HARNESS_VERSION, decode_value
from rlbound.verify.code_compare import MBPP_OUTPUT_NOT_NONE_TASKS, outputs_match, stdout_matches
from rlbound.verify.code_extract import extract_program, normalise_program
from rlbound.verify.sandbox import PYTHON, SandboxLimits, SandboxResult, run_sandboxed, sandbox_ready

PASS, FAIL = "pass", "fail"

@dataclass(frozen=True)
class TestSpec:
    """A parsed reference (see the module docstring); ``values`` are decoded once, lazily."""

    kind: str
    inputs: tuple
    expected: tuple
    base: int | None = None
    entry_point: str = ""
    prompt: str = ""
    atol: float = 0.0
    times: tuple | None = None
    dataset: str = "generic"
    context: str = ""  # the prompt minus the entry point's stub: prepended to whole programs
    time_limit_s: float | None = None  # stdio: each test's deadline (else min_input_s)
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def input_values(self, i: int) -> Any:
        key = ("in", i)
        if key not in self.cache:
            self.cache[key] = decode_value(self.inputs[i])
        return self.cache[key]

    def plain_equality_unsafe(self) -> set[int] | range:
        """Inputs where equal encodings do not settle a pass: an expected value holding a NaN,
        or every input of a task with a special oracle."""
        if "unsafe" not in self.cache:
            from rlbound.verify.code_compare import has_special_oracle

            if has_special_oracle(self.dataset, self.entry_point):
                self.cache["unsafe"] = range(len(self.expected))
            elif not self.cache.get("may_hold_nan", True):
                self.cache["unsafe"] = set()
            else:
                self.cache["unsafe"] = {i for i, e in enumerate(self.expected) if _holds_nan(e)}
        return self.cache["unsafe"]

    def expected_bytes(self) -> int:
        """An upper bound of the expected outputs' encoded size (the reference's length)."""
        return self.cache["reference_bytes"]

    def expected_value(self, i: int) -> Any:
        key = ("exp", i)
        if key not in self.cache:
            self.cache[key] = decode_value(self.expected[i])
        return self.cache[key]


def _holds_nan(encoded: Any) -> bool:
    if type(encoded) is list:
        return any(_holds_nan(v) for v in encoded)
    if type(encoded) is dict:
        return encoded.get("v") == "nan" or _holds_nan(encoded.get("v"))
    return False


@lru_cache(maxsize=512)
def parse_spec(reference: str) -> TestSpec:
    """The :class:`TestSpec` of a reference string; RlboundError when it is not one."""
    try:
        data = json.loads(reference)
        kind = data["kind"]
        inputs, expected = tuple(data["inputs"]), tuple(data["expected"])
    except (ValueError, KeyError, TypeError):
        raise RlboundError("the code verifier needs a code task's test spec as the reference "
                           "(use a code task: humaneval, humaneval_plus, mbpp, mbpp_plus, code_stdio)") from None
    if kind not in ("function", "stdio") or len(inputs) != len(expected):
        raise RlboundError(f"malformed code test spec (kind {kind!r}, {len(inputs)} inputs, {len(expected)} outputs)")
    prompt = data.get("prompt") or ""
    entry = data.get("entry_point") or ""
    spec = TestSpec(kind=kind, inputs=inputs, expected=expected, base=data.get("base"), entry_point=entry,
                    prompt=prompt, atol=float(data.get("atol") or 0.0),
                    times=tuple(data["times"]) if data.get("times") else None,
                    dataset=data.get("dataset") or "generic", context=_context(prompt, entry),
                    time_limit_s=float(data["time_limit_s"]) if data.get("time_limit_s") else None)
    # the codec writes a NaN as the string "nan": a reference without one holds no NaN
    spec.cache.update(reference_bytes=len(reference), may_hold_nan='"nan"' in reference)
    return spec


def _context(prompt: str, entry_point: str) -> str:
    """The prompt's code without the entry point's own definition (imports, helpers)."""
    if not prompt.strip():
        return ""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    lines = prompt.splitlines(keepends=True)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            return "".join(lines[:start] + lines[node.end_lineno:])
    return prompt


def _defines(program: str, name: str) -> bool:
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name
               for n in tree.body) or any(
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
        for n in tree.body)


def not_none_outputs(dataset: str, entry_point: str) -> bool:
    """Whether the harness reports this task's outputs as "not None" (MBPP+'s match-object tasks)."""
    return dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS


def assemble(spec: TestSpec, program: str) -> str:
    """The program to run: a continuation is appended to the prompt; a whole program that
    defines the entry point gets the prompt's imports and helpers before it; in function mode,
    without its example usage (:func:`without_examples`)."""
    if spec.kind != "function":
        return program
    if spec.prompt:
        if _defines(program, spec.entry_point):
            program = spec.context.rstrip() + "\n\n" + program if spec.context.strip() else program
        else:
            program = spec.prompt + program
    return without_examples(program)


def _is_main_guard(node: ast.stmt) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__")


def without_examples(program: str) -> str:
    """``program`` with its ``if __name__ == "__main__":`` blocks, top-level ``assert``
    statements and bare top-level expressions (the module docstring apart) blanked out: example
    usage that models append, where an ``input()`` or a wrong assert would end the run. The
    lines are blanked, not removed, so line numbers stay; a program that does not parse is
    returned as it is (it fails to load in the sandbox)."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return program
    lines = program.splitlines(keepends=True)
    blank: list[tuple[int, int]] = []
    kept: set[int] = set()
    for i, node in enumerate(tree.body):
        span = (node.lineno - 1, node.end_lineno or node.lineno)
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if _is_main_guard(node) or isinstance(node, ast.Assert) or (isinstance(node, ast.Expr) and not docstring):
            blank.append(span)
        else:
            kept.update(range(*span))
    # a statement sharing a line with one that stays (``x = 1; print(x)``) stays too
    blank = [(a, b) for a, b in blank if not kept.intersection(range(a, b))]
    if not blank:
        return program
    for start, end in blank:
        for j in range(start, min(end, len(lines))):
            lines[j] = "\n"
    return "".join(lines)


# --- running -------------------------------------------------------------------------------------


@dataclass
class CodeOutcome:
    """The verdict of one program: ``status`` (pass, fail, error, timeout, memory, output_limit,
    sandbox_error), ``base_pass`` (None without a base subset), which input decided, and why."""

    status: str
    base_pass: bool | None
    failed_input: int | None = None
    detail: str = ""
    wall_s: float = 0.0

    def check_result(self) -> CheckResult:
        if self.status in (PASS, FAIL):
            return CheckResult(self.status == PASS, STATUS_OK, self.base_pass)
        return CheckResult(False, self.status, self.base_pass)


_HEADER_KEYS = {"loaded", "load_error", "done"}


def read_frames(stdout: bytes, nonce: str, truncated: bool = False) -> tuple[dict, dict, str | None]:
    """(per-input records, header records, why the frames are not trustworthy or None).

    Lines without the run's frame prefix are ignored; the last line of output cut at its cap
    (``truncated``) is dropped, being partial."""
    prefix = f"{FRAME_MARK}{nonce} "
    per_input: dict[int, dict] = {}
    header: dict = {}
    lines = stdout.decode("utf-8", errors="replace").split("\n")
    if truncated:
        lines = lines[:-1]
    for line in lines:
        if not line.startswith(prefix):
            continue
        try:
            record = json.loads(line[len(prefix):])
        except (ValueError, RecursionError):
            return per_input, header, "a malformed result frame"
        if not isinstance(record, dict):
            return per_input, header, "a malformed result frame"
        if "i" in record:
            i = record["i"]
            if type(i) is not int or i in per_input:
                return per_input, header, f"a repeated or malformed result for input {i!r}"
            per_input[i] = record
        elif set(record) <= _HEADER_KEYS:
            header.update(record)
        else:
            return per_input, header, "a malformed result frame"
    return per_input, header, None


_RUN_FAILURES = ("timeout", "memory", "output_limit", "sandbox_error")


def judge(spec: TestSpec, result: SandboxResult, nonce: str) -> CodeOutcome:
    """Decide the verdict of a finished run from its result frames (outside the sandbox)."""
    per_input, header, forged = read_frames(result.stdout, nonce, result.truncated)
    early = result.status if result.status in _RUN_FAILURES else STATUS_ERROR
    status, failed, detail = PASS, None, ""
    if forged:
        status, failed, detail = FAIL, None, forged
    elif "load_error" in header or not header.get("loaded"):
        status = STATUS_ERROR if "load_error" in header else early
        detail = str(header.get("load_error") or _tail(result))
    else:
        for i in range(len(spec.inputs)):
            record = per_input.get(i)
            verdict, why = _judge_input(spec, i, record)
            if verdict is None:
                verdict, why = early, f"the run ended before input {i} ({result.status}); {_tail(result)}"
            if verdict != PASS:
                status, failed, detail = verdict, i, why
                break
    base = None
    if spec.base is not None:
        base = status == PASS or (failed is not None and failed >= spec.base)
    return CodeOutcome(status, base, failed, detail, result.wall_s)


def _judge_input(spec: TestSpec, i: int, record: dict | None) -> tuple[str | None, str]:
    if record is None:
        return None, ""
    if record.get("timeout"):
        return STATUS_TIMEOUT, f"input {i} passed its time limit"
    if "exc" in record:
        return STATUS_ERROR, f"input {i} raised {record['exc']}"
    if "bad" in record:
        return (("output_limit", f"input {i}: output past its cap") if record["bad"] == "output_limit"
                else (FAIL, f"input {i}: {record['bad']}"))
    if spec.kind == "stdio":
        got = record.get("stdout")
        if not isinstance(got, str):
            return FAIL, f"input {i}: a malformed result"
        return (PASS, "") if stdout_matches(got, spec.expected[i]) else (FAIL, f"input {i}: wrong output")
    if "out" not in record:
        return FAIL, f"input {i}: a malformed result"
    if record["out"] == spec.expected[i] and i not in spec.plain_equality_unsafe():
        return PASS, ""  # equal encodings: equal types and values, so == holds (no NaN inside)
    try:
        out = decode_value(record["out"])
    except (ValueError, TypeError, RecursionError, OverflowError):
        return FAIL, f"input {i}: an output that is not plain data"
    if outputs_match(out, spec.expected_value(i), spec, spec.input_values(i)):
        return PASS, ""
    return FAIL, f"input {i}: wrong output"


def _tail(result: SandboxResult) -> str:
    """The last line of the run's standard error (the harness's or bwrap's complaint), if any."""
    lines = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


@lru_cache(maxsize=1)
def harness_source() -> str:
    return Path(code_harness.__file__).read_text(encoding="utf-8")


def run_harness(job: dict, limits: SandboxLimits, sandbox: bool = True) -> tuple[SandboxResult, str]:
    """Run the harness on ``job`` (a nonce is added); (the run's result, the nonce)."""
    nonce = secrets.token_hex(8)
    payload = marshal.dumps({**job, "nonce": nonce})
    if sandbox:
        return run_sandboxed(harness_source(), stdin=payload, limits=limits), nonce
    return run_unsandboxed(harness_source(), payload, limits), nonce


def run_unsandboxed(program: str, stdin: bytes, limits: SandboxLimits) -> SandboxResult:
    """``--unsafe-no-sandbox``: the program as a plain child process with the wall-clock limit and
    an address-space cap only. For trusted code: nothing here contains a hostile program."""
    import resource

    def limit() -> None:
        cap = max(limits.memory_bytes * 4, 2**31)  # RLIMIT_AS counts mappings, not use
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rlbound-unsafe-") as work:
        Path(work, "main.py").write_text(program, encoding="utf-8")
        proc = subprocess.Popen([PYTHON if os.path.exists(PYTHON) else "python3", "-E", "-s", "main.py"],
                                cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=limit)
        try:
            out, err = proc.communicate(stdin, timeout=limits.wall_s)
            status = "ok" if proc.returncode == 0 else "error"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            status = "timeout"
    return SandboxResult(status, proc.returncode, out, err, time.monotonic() - started)


@register_verifier("code")
class CodeVerifier(Verifier):
    """Programs graded by running them on the test spec's inputs (see the module docstring)."""

    name = "code"

    def __init__(self, sandbox: bool = True, wall_s: float = 3.0, time_factor: float = 4.0,
                 min_input_s: float = 1.0, max_wall_s: float = 30.0, memory_mb: int = 512,
                 processes: int = 64, disk_mb: int = 64, output_mb: float = 1.0,
                 workers: int | None = None):
        for key, value in (("wall_s", wall_s), ("time_factor", time_factor), ("min_input_s", min_input_s),
                           ("max_wall_s", max_wall_s), ("memory_mb", memory_mb), ("processes", processes),
                           ("disk_mb", disk_mb), ("output_mb", output_mb)):
            if not float(value) > 0:
                raise RlboundError(f"code verifier option {key} must be positive, got {value!r}")
        self.sandbox = bool(sandbox)
        self.wall_s, self.time_factor, self.min_input_s = float(wall_s), float(time_factor), float(min_input_s)
        self.max_wall_s, self.memory_mb, self.processes = float(max_wall_s), int(memory_mb), int(processes)
        self.disk_mb, self.output_mb = int(disk_mb), float(output_mb)
        self.workers = workers or 2 * (os.cpu_count() or 1)  # a launch mostly waits on its child
        self.max_check_s = self.max_wall_s + 5.0

    def settings(self) -> dict[str, Any]:
        from rlbound.verify.code_extract import RULES_VERSION

        return {"sandbox": self.sandbox, "wall_s": self.wall_s, "time_factor": self.time_factor,
                "min_input_s": self.min_input_s, "max_wall_s": self.max_wall_s,
                "memory_mb": self.memory_mb, "processes": self.processes, "disk_mb": self.disk_mb,
                "output_mb": self.output_mb, "rules": f"extract-{RULES_VERSION}/harness-{HARNESS_VERSION}",
                "backend": sandbox_python_version()}

    def prepare(self) -> None:
        if self.sandbox:
            sandbox_ready()

    def has_base_subset(self, reference: str) -> bool:
        return parse_spec(reference).base is not None

    def extract(self, completion: str) -> str | None:
        """The program, in its normalised form (what runs, and what answer diversity counts)."""
        program = extract_program(completion)
        return None if program is None else normalise_program(program)

    def normalise(self, answer: str) -> str:
        return normalise_program(answer)

    def equivalent(self, reference: str, answer: str) -> bool:
        return self.check(reference, answer).correct

    def check(self, reference: str, answer: str) -> CheckResult:
        return self.grade(parse_spec(reference), answer).check_result()

    def limits_for(self, spec: TestSpec, output_bytes: int = 0) -> tuple[SandboxLimits, list[float]]:
        """The run's limits and each input's deadline (see the module docstring)."""
        times = spec.times or (0.0,) * len(spec.inputs)
        per_input = [max(self.min_input_s, self.time_factor * float(t)) for t in times]
        wall = min(self.max_wall_s, self.wall_s + self.time_factor * sum(float(t) for t in times))
        if spec.kind == "stdio":
            per_input = [spec.time_limit_s or self.min_input_s] * len(spec.inputs)
            wall = min(self.max_wall_s, self.wall_s + sum(per_input))
        cap = max(int(self.output_mb * 2**20), output_bytes)
        return SandboxLimits(wall_s=wall, memory_bytes=self.memory_mb * 2**20, processes=self.processes,
                             disk_bytes=self.disk_mb * 2**20, output_bytes=cap), per_input

    def grade(self, spec: TestSpec, program: str) -> CodeOutcome:
        """Run ``program`` on every input of ``spec`` and judge it."""
        limits, per_input = self.limits_for(spec, 2 * spec.expected_bytes() + 256 * len(spec.inputs) + 65536)
        job: dict[str, Any] = {"mode": spec.kind, "program": assemble(spec, program),
                               "entry_point": spec.entry_point, "input_timeouts": per_input,
                               "output_cap": limits.output_bytes,
                               "not_none": not_none_outputs(spec.dataset, spec.entry_point)}
        job["stdin" if spec.kind == "stdio" else "inputs"] = list(spec.inputs)
        result, nonce = run_harness(job, limits, self.sandbox)
        if result.status == STATUS_SANDBOX_ERROR and not result.stdout:
            return CodeOutcome(STATUS_SANDBOX_ERROR, None if spec.base is None else False, None,
                               _tail(result), result.wall_s)
        return judge(spec, result, nonce)


@lru_cache(maxsize=1)
def sandbox_python_version() -> str:
    """The version of the interpreter programs run under (verdicts may differ between versions)."""
    try:
        out = subprocess.run([PYTHON, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, timeout=30)
        return f"python-{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        return "python-unknown"
