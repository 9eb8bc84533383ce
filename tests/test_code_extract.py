"""Program extraction and cache-key normalisation for code benchmarks: one group of cases per rule
of rlbound.verify.code_extract, realistic completions of instruction and base models, and every
HumanEval+ / MBPP+ canonical solution read back through the rules."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import warnings
from pathlib import Path

import pytest

from rlbound.verify.code_extract import extract_program, normalise_program

DATA = Path("/work/shared/data/code")
HUMANEVAL_PLUS = DATA / "HumanEvalPlus.jsonl.gz"
MBPP_PLUS = DATA / "MbppPlus-dev-767efcc.jsonl.gz"
F = "def f(x):\n    return x + 1\n"
G = "def f(x):\n    return x + 2\n"


def _fence(code: str, tag: str = "python", fence: str = "```") -> str:
    return f"{fence}{tag}\n{code}{fence}\n"


def _defines(program: str, name: str) -> bool:
    with warnings.catch_warnings():  # some canonical solutions have invalid escapes ('\w')
        warnings.simplefilter("ignore")
        tree = ast.parse(program)
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name
               for node in tree.body)


# --- rule 2: the last complete Python block --------------------------------------------------------


def test_block_between_prose() -> None:
    completion = "Here is the function:\n" + _fence(F) + "\nExplanation: it adds one to `x`."
    assert extract_program(completion) == F


def test_last_block_is_the_final_version() -> None:
    completion = "First try:\n" + _fence(F) + "\nThat is off by one. Fixed:\n" + _fence(G)
    assert extract_program(completion) == G


def test_blocks_in_other_languages_are_skipped() -> None:
    completion = (
        "Solution:\n" + _fence(F) + "Install the dependencies:\n" + _fence("pip install numpy\n", "bash")
        + "Running it prints:\n" + _fence("2\n", "output") + _fence('{"a": 1}\n', "json")
    )
    assert extract_program(completion) == F


@pytest.mark.parametrize("tag", ["python", "Python", "PY", "py", "python3", ""])
def test_python_tags_any_case(tag: str) -> None:
    assert extract_program("Code:\n" + _fence(F, tag) + "Done.") == F


def test_usage_example_block_does_not_replace_the_definition() -> None:
    completion = "Solution:\n" + _fence(F) + "Example usage:\n" + _fence("print(f(3))  # 4\n") + "Done."
    assert extract_program(completion) == F
    assert extract_program("Run:\n" + _fence("import sys\nprint(sys.argv)\n")) == "import sys\nprint(sys.argv)\n"


def test_an_untagged_script_is_a_program_not_output() -> None:
    assert extract_program("Try:\n```\nprint('hello')\n```\n") == "print('hello')\n"


def test_inline_triple_backticks_are_not_a_fence() -> None:
    assert extract_program("```f(1)``` returns 2.\n" + _fence(F)) == F


def test_a_fenced_continuation_body_keeps_its_indentation() -> None:
    body = "    y = x + 1\n    return y\n"
    assert extract_program("Complete it with:\n" + _fence(body)) == body


def test_a_longer_fence_is_closed_only_by_one_as_long() -> None:
    program = 'USAGE = """\n```\nf(1)\n```\n"""\n'
    assert extract_program("````python\n" + program + "````\nDone.") == program


def test_tilde_fences() -> None:
    assert extract_program("Here:\n" + _fence(F, "py", "~~~") + "\nHope that helps.") == F


def test_untagged_output_block_after_code_is_skipped() -> None:
    completion = _fence(F) + "Example output:\n```\n[1, 2, 3]\n```\n"
    completion += "```\nTraceback (most recent call last):\n```\n"
    assert extract_program(completion) == F


def test_indented_fence_in_a_numbered_list() -> None:
    completion = (
        "1. Import what we need.\n2. Write the function:\n\n   ```python\n   import math\n\n"
        "   def f(x):\n       return math.floor(x)\n   ```\n3. Test it.\n"
    )
    assert extract_program(completion) == "import math\n\ndef f(x):\n    return math.floor(x)\n"


def test_repl_block_is_skipped_for_a_code_block() -> None:
    completion = _fence(F) + "Usage:\n" + _fence(">>> f(1)\n2\n")
    assert extract_program(completion) == F
    completion = "Usage:\n" + _fence(">>> f(1)\n2\n") + "Code:\n" + _fence(F)
    assert extract_program(completion) == F


def test_only_a_repl_block_is_read_without_prompts_and_output() -> None:
    completion = _fence(">>> def f(x):\n...     return x + 1\n...\n>>> f(1)\n2\n")
    assert extract_program(completion) == "def f(x):\n    return x + 1\n\nf(1)\n"


def test_doctests_inside_a_program_are_not_a_repl() -> None:
    program = 'def f(x):\n    """\n    >>> f(1)\n    2\n    """\n    return x + 1\n'
    assert extract_program(_fence(program) + _fence(F)) == F
    assert extract_program(_fence(program)) == program


# --- rule 1: reasoning and answer tags -------------------------------------------------------------


def test_think_then_answer() -> None:
    completion = "<think>\nMaybe:\n" + _fence(G) + "No, off by one.\n</think>\n"
    completion += "<answer>\n" + _fence(F) + "</answer>"
    assert extract_program(completion) == F


def test_closing_think_only_prompt_opened_it() -> None:
    completion = "Let me think.\n" + _fence(G) + "Hmm.\n</think>\n\n" + _fence(F)
    assert extract_program(completion) == F


def test_answer_tag_wins_over_code_outside() -> None:
    assert extract_program("<answer>\n" + _fence(F) + "</answer>\n" + _fence(G)) == F
    assert extract_program("<answer>" + F + "</answer> trailing words") == F


def test_unclosed_think_reads_only_complete_blocks() -> None:
    assert extract_program("<think>\nI could write\ndef f(x):\n    return x") is None
    assert extract_program("<think>\nDraft:\n```python\ndef f(x):\n    return") is None
    assert extract_program("<think>\nFinal:\n" + _fence(F) + "wait, maybe") == F


def test_think_is_case_insensitive() -> None:
    assert extract_program("<THINK>" + _fence(G) + "</THINK>" + _fence(F)) == F


# --- rule 3: a block cut off by the token limit ---------------------------------------------------


def test_unclosed_final_fence() -> None:
    assert extract_program("Here is my solution:\n```python\ndef f(x):\n    return x + 1") == F
    assert extract_program("Here:\n```\ndef f(x):\n    return x + 1\n") == F


def test_closing_fence_glued_to_the_last_line() -> None:
    assert extract_program("Here:\n```python\ndef f(x):\n    return x + 1```\n\nIt adds one.") == F


def test_complete_block_wins_over_a_cut_off_one() -> None:
    assert extract_program(_fence(F) + "An improved version:\n```python\ndef f(x):\n    re") == F


# --- rule 4: continuations -------------------------------------------------------------------------


def test_continuation_keeps_a_following_helper() -> None:
    body = "    return helper(x)\n\n\ndef helper(x):\n    return x + 1\n"
    assert extract_program(body + "\n\n\nif __name__ == '__main__':\n    print(f(1))\n") == body


def test_continuation_followed_by_check_def_is_kept() -> None:
    body = "    return x + 1\n"
    check = "\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n"
    assert extract_program(body + check) == body + check


@pytest.mark.parametrize("stop", ['\n\nif __name__ == "__main__":\n    check(f)\n', "\nprint(f(1))\n",
                                  "\n# test\nassert f(1) == 2\n", "\nThis adds one.\n", "\n```\n"])
def test_continuation_ends_at_a_stop_line(stop: str) -> None:
    assert extract_program("    y = x + 1\n    return y\n" + stop) == "    y = x + 1\n    return y\n"


def test_continuation_outside_non_python_blocks() -> None:
    assert extract_program("    return x + 1\n```output\n2\n```\n") == "    return x + 1\n"
    assert extract_program("```bash\npip install x\n```\n    return x + 1\n") == "    return x + 1\n"


# --- rule 5: plain-text programs -------------------------------------------------------------------


def test_unfenced_code_then_prose() -> None:
    completion = F + "\nThis function works by adding one to its argument.\nIt runs in O(1) time.\n"
    assert extract_program(completion) == F


def test_unfenced_code_after_leading_prose() -> None:
    assert extract_program("Sure! Here's the code:\ndef f(x): return x + 1\n\nHope this helps") == (
        "def f(x): return x + 1\n")


def test_unfenced_keeps_imports_constants_and_decorators() -> None:
    program = "import functools\nMOD = 10**9 + 7\n\n@functools.cache\ndef f(n):\n    return n % MOD\n"
    assert extract_program("The answer:\n\n" + program + "\nExplanation: memoised.\n") == program
    assert extract_program("Answer:\nMOD = 7\nfrom math import gcd\ndef f(a):\n    return gcd(a, MOD)\n") == (
        "MOD = 7\nfrom math import gcd\ndef f(a):\n    return gcd(a, MOD)\n")


def test_unfenced_prose_line_starting_like_code_is_skipped() -> None:
    completion = "import statements are not needed here.\n" + F + "Output\n"
    assert extract_program(completion) == F


def test_unfenced_prose_line_just_above_is_not_kept() -> None:
    assert extract_program("Solution\n" + F) == F
    assert extract_program("Note: this\n" + F) == F


def test_unfenced_prose_with_unclosed_bracket() -> None:
    assert extract_program(F + "Note (this is important: it handles negatives.\n") == F


# --- line endings and nothing at all ---------------------------------------------------------------


def test_windows_line_endings() -> None:
    completion = "Here:\r\n```python\r\ndef f(x):\r\n    return x + 1\r\n```\r\nDone.\r\n"
    assert extract_program(completion) == F
    assert extract_program(F.replace("\n", "\r\n") + "\r\nIt adds one.\r\n") == F
    assert extract_program("    return x + 1\r\n\r\nprint(1)\r\n") == "    return x + 1\n"


@pytest.mark.parametrize("completion", [
    "", "   \n\t\n", "I cannot solve this problem.", "The answer is 42.\nBecause reasons.",
    _fence("echo hi\n", "bash"), _fence("\n\n"), "```python\n```\n", "<answer>no code</answer>",
    "Run `pip install x` first.", "```\n3\n```",
])
def test_no_program(completion: str) -> None:
    assert extract_program(completion) is None


# A generous limit where pytest-timeout is installed; elsewhere the test only has to return.
_generous_timeout = pytest.mark.timeout(60) if importlib.util.find_spec("pytest_timeout") else (lambda test: test)


@_generous_timeout
def test_a_megabyte_of_prose_returns() -> None:
    completion = "This is a sentence about the problem, with (brackets and 'quotes.\n" * 16_000
    assert len(completion) > 1_000_000
    assert extract_program(completion) is None
    result = extract_program("def f():\n    pass\n" + completion)
    assert result is None or isinstance(result, str)


# --- real data: HumanEval+ and MBPP+ canonical solutions -------------------------------------------


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared benchmark data is not on this machine)")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_humaneval_plus_canonical_continuations() -> None:
    rows = _rows(HUMANEVAL_PLUS)
    assert len(rows) >= 164
    for row in rows:
        body = extract_program(row["canonical_solution"])
        assert body is not None, row["task_id"]
        assert _defines(row["prompt"] + body, row["entry_point"]), row["task_id"]
        answer = "Here is the completed function:\n```python\n" + row["prompt"] + row["canonical_solution"]
        answer += "```\n"
        program = extract_program(answer + "It passes the examples.")
        assert program is not None and _defines(program, row["entry_point"]), row["task_id"]


@pytest.mark.parametrize("fenced", [True, False])
def test_mbpp_plus_canonical_programs(fenced: bool) -> None:
    rows = _rows(MBPP_PLUS)
    assert len(rows) >= 300
    for row in rows:
        code = row["canonical_solution"]
        completion = ("```python\n" + code + "\n```\n" if fenced else code) + "\nThis solves the task.\n"
        program = extract_program("Here is the solution:\n" + completion)
        assert program is not None and _defines(program, row["entry_point"]), row["task_id"]
        assert normalise_program(program) == normalise_program(code), row["task_id"]


# --- normalise_program -----------------------------------------------------------------------------


def test_comments_and_blank_lines_do_not_change_the_key() -> None:
    noisy = "# solution\ndef f(x):\n\n    # add one\n    return x+1   # done\n\n\n"
    assert normalise_program(noisy) == normalise_program(F)
    assert normalise_program(F.replace("\n", "\r\n")) == normalise_program(F)


def test_a_changed_constant_changes_the_key() -> None:
    assert normalise_program(F) != normalise_program(G)
    assert normalise_program('s = "a  b"\n') != normalise_program('s = "a b"\n')  # string contents kept


def test_docstrings_are_kept() -> None:
    assert normalise_program('def f():\n    """One."""\n') != normalise_program('def f():\n    """Two."""\n')


def test_bodies_agree_across_comments_and_never_match_a_program() -> None:
    body = "    y = x + 1\n    return y\n"
    noisy = "    # first\n    y = x+1  # add\n\n    return y\n"
    assert normalise_program(body) == normalise_program(noisy)
    assert normalise_program(body) != normalise_program("y = x + 1\nreturn y\n")
    assert normalise_program(body) != normalise_program("    y = x + 2\n    return y\n")
    helper = "    return g(x)\n\ndef g(x):\n    return x  # id\n"
    assert normalise_program(helper) == normalise_program("    return g(x)\ndef g(x):\n    return x\n")


def test_syntax_errors_get_the_textual_form() -> None:
    broken = "def f(x):\r\n    return (x +   \r\n\r\n  1\n"
    assert normalise_program(broken) == "def f(x):\n    return (x +\n  1"  # indentation kept
    assert normalise_program(broken) != normalise_program("def f(x):\n    return (x +\n1\n")


@pytest.mark.parametrize("garbage", [
    "a\x00b = 1", "(" * 10_000, "(" * 10_000 + ")" * 10_000, 'x = "abc', "'''never closed",
    "x = " + "-" * 100_000 + "1",
    "x = " + "1+" * 50_000 + "1", "    return (", "\x00", "", "\ud800", "def f(:\n\tpass", "x = 1\n" * 40_000,
])
def test_normalise_never_raises(garbage: str) -> None:
    assert isinstance(normalise_program(garbage), str)
    assert isinstance(extract_program(garbage), (str, type(None)))


def test_a_bare_script_is_a_program_and_prose_is_not():
    script = "n = int(input())\nprint(n * 2)\n"
    assert extract_program(script) == script
    assert extract_program("Sure") is None
    assert extract_program("42") is None
    assert extract_program("The answer uses a loop.") is None
