"""LiveCodeBench code-generation problems (Jain et al. 2024) from one of its JSONL files.

The files of ``livecodebench/code_generation_lite`` (``test.jsonl`` … ``test6.jsonl``, one per
release) hold per problem ``question_id``, ``question_title``, ``question_content``, ``platform``
(atcoder, codeforces, leetcode), ``contest_date``, ``difficulty``, ``starter_code``,
``public_test_cases`` (a JSON list of ``{"input", "output", "testtype"}``) and
``private_test_cases`` (the same list as JSON, or, in most records, that JSON string pickled,
zlib-compressed and base64-encoded).

Problems whose tests are all ``stdin`` become stdin/stdout problems graded by the code verifier
(public tests first: they are the base subset). LeetCode-style ``functional`` problems (call a
method of ``class Solution``) are left out and counted (``functional_left_out`` in the task
options): the code verifier has no harness for them yet. ``start_date`` / ``end_date``
(``YYYY-MM-DD``, inclusive) keep the problems of a contest window, as LiveCodeBench's releases
are used to avoid contamination.

The pickled tests are read with an unpickler that refuses every global, so a file can only ever
yield plain strings: no code in a data file runs while it is loaded.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from pathlib import Path
from typing import Any

from rlbound.errors import RlboundError
from rlbound.progress import note
from rlbound.tasks.base import Task
from rlbound.tasks.code import stdio_problem
from rlbound.tasks.files import _read_records

STDIN_NOTE = "Read the input from standard input and write the answer to standard output."


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - refuses every global
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def decode_tests(value: Any, where: str) -> list[dict[str, Any]]:
    """A test list from its JSON text, or from LiveCodeBench's base64(zlib(pickle(JSON)))."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str) or not value.strip():
        return []
    text = value.strip()
    if text[0] != "[":
        try:
            raw = zlib.decompress(base64.b64decode(text))
            text = _PlainDataUnpickler(io.BytesIO(raw)).load()
        except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as exc:
            raise RlboundError(f"{where}: private_test_cases is neither JSON nor LiveCodeBench's "
                               f"compressed form ({exc})") from None
        if not isinstance(text, str):
            raise RlboundError(f"{where}: private_test_cases does not decode to JSON text")
    try:
        tests = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RlboundError(f"{where}: test cases are not valid JSON ({exc.msg})") from None
    if not isinstance(tests, list):
        raise RlboundError(f"{where}: test cases must be a JSON list")
    return tests


def livecodebench_file(file: Path, limit: int | None = None, template: str = "code-instruct",
                       start_date: str | None = None, end_date: str | None = None,
                       time_limit_s: float | None = None) -> Task:
    """The stdin/stdout problems of one LiveCodeBench file (see the module docstring)."""
    problems, functional, seen = [], 0, {}
    for lineno, record in _read_records(file):
        where = f"tasks file '{file}' line {lineno}"
        missing = [k for k in ("question_id", "question_content", "public_test_cases") if k not in record]
        if missing:
            raise RlboundError(f'{where}: missing field "{missing[0]}" (is this a LiveCodeBench file?)')
        date = str(record.get("contest_date") or "")[:10]
        if (start_date and date < start_date) or (end_date and date > end_date):
            continue
        tests = (decode_tests(record["public_test_cases"], where),
                 decode_tests(record.get("private_test_cases"), where))
        every = tests[0] + tests[1]
        if not every:
            raise RlboundError(f"{where}: no test cases")
        if any(t.get("testtype", "stdin") != "stdin" for t in every):
            functional += 1
            continue
        pid = str(record["question_id"])
        if pid in seen:
            raise RlboundError(f"{where}: duplicate problem id {pid!r} (first at line {seen[pid]})")
        seen[pid] = lineno
        prompt = f"{record['question_content'].strip()}\n\n{STDIN_NOTE}"
        metadata = {k: record[k] for k in ("platform", "difficulty", "contest_date", "question_title")
                    if isinstance(record.get(k), str) and len(record[k]) <= 200}
        problems.append(stdio_problem(pid, prompt, [(str(t["input"]), str(t["output"])) for t in every],
                                      len(tests[0]), time_limit_s, metadata))
        if limit is not None and len(problems) >= limit:
            break
    if functional:
        note(f"[yellow]note:[/] {functional} LeetCode-style (functional) problems left out: "
             "rlbound grades stdin/stdout programs only")
    if not problems:
        raise RlboundError(f"tasks file '{file}' holds no stdin/stdout problems in the chosen dates")
    return Task(name=f"livecodebench:{file.name}", problems=tuple(problems), verifier="code", template=template,
                options={"path": str(file.resolve()), "start_date": start_date, "end_date": end_date,
                         "limit": limit, "time_limit_s": time_limit_s, "functional_left_out": functional})
