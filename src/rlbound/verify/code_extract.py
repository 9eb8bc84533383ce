"""Program extraction and cache-key normalisation for code benchmarks (HumanEval/MBPP style).

:func:`extract_program` finds the program a completion commits to (line endings become LF). The
rules, in order:

=====  ===============  ========================================================================
order  rule             what it reads, and why
=====  ===============  ========================================================================
1      reasoning, tags  Text up to the last ``</think>`` is reasoning (R1 templates open the tag
                        in the prompt). A ``<think>`` left open means generation stopped while
                        reasoning: after it only rule 2 applies, as cut-off or plain-text code
                        there is a draft. Then the inside of the last ``<answer>`` tag, if any
                        (to the end of the text if it never closes), is what the rules read.
2      last block       The last complete ``` or ~~~ block tagged python/py/python3 (any case) or
                        untagged: a rewritten program's final version comes last. Other tags
                        (bash, output, json, ...) and untagged blocks holding only output (bare
                        values, or text with no code line) are skipped; so is a block defining
                        nothing ("example usage: print(f(3))") when an earlier one defines a
                        function or class. A block starting ``>>>`` (REPL) is skipped unless all
                        are; then the last is read with prompts stripped and output dropped.
                        Indented fences (markdown lists) count, their common indentation
                        stripped, except for a column-0 block that does not open with a
                        definition or import: a continuation body, whose indentation matters.
3      cut-off block    Generation stopped inside a Python or untagged block (max tokens): the
                        text after its opening fence, up to a closing fence glued to the end
                        of a code line (``return x```), if any.
4      continuation     Other blocks blanked out, an indented first line continues the prompt's
                        function (HumanEval): up to the first column-0 line that does not start
                        a definition, import or decorator (human-eval's stop sequences ``if``,
                        ``print``, ``#``, ``assert``, or prose); a helper ``def`` is kept. Tried
                        before rule 5, which would return only the helper.
5      plain program    From the first column-0 ``def``, ``async def``, ``class``, ``import``,
                        ``from X import`` or ``@`` line, with the column-0 imports, assignments
                        and comments just above it (``MOD = ...``), the longest prefix that
                        ``ast.parse`` accepts: each syntax error cuts before the top-level
                        statement holding it, so trailing prose goes in a parse or two (at most
                        25), and a trailing one-word line ("Output") goes too. A start giving
                        nothing ("import statements are ...") passes to the next, up to 5. A
                        region over 2,000 lines or 200 KB gives up.
6      bare script      Stdin/stdout answers (``n = int(input())`` ...): the whole text, fences
                        blanked, when it parses and holds a statement that is more than a lone
                        name or constant ("Sure", "42" are not programs).
7      nothing          Otherwise None. A result loses its outer blank lines and ends with one
                        newline; an empty one is None.
=====  ===============  ========================================================================

:func:`normalise_program` gives the cache key (equal keys, identical behaviour):
``ast.unparse(ast.parse(program))``, so comments and layout go and strings stay exact. A
continuation body (first line indented) is parsed inside a dummy ``def`` and unparsed back
indented, so it never collides with a full program. A syntax error, null bytes, nesting too deep
or over 200 KB: a textual key (trailing whitespace and blank lines dropped, indentation kept). It
never raises.

Not done: the program is not run or checked; an unfenced script followed by prose is not found
(rule 6 needs the whole text to parse).
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from typing import NamedTuple

__all__ = ["extract_program", "normalise_program"]

#: The version of these rules, recorded in the code verifier's settings (runs graded under other
#: rules can be re-graded with ``rlbound reverify``).
RULES_VERSION = 1

_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
_FENCE_RE = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")
_TAG_RE = re.compile(r"[ \t]*\{?[ \t]*\.?([\w+#-]*)")
_CODE_START_RE = re.compile(r"(?:async[ \t]+def|def|class|import)[ \t]|from[ \t]+[\w.]+[ \t]+import[ \t]|@[\w(]")
_CODE_LINE_RE = re.compile(r"^[ \t]*(?:async|def|class|import|from|return|for|while|if|with|try|print)\b", re.M)
_DEFINES_RE = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]", re.MULTILINE)
_CLAUSE_RE = re.compile(r"(?:else|elif|except|finally)\b")
_THINK_OPEN_RE = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"</think>", re.IGNORECASE)
_ANSWER_OPEN_RE = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE_RE = re.compile(r"</answer>", re.IGNORECASE)
_MAX_LINES = 2000
_MAX_CHARS = 200_000
_MAX_PARSES = 25
_MAX_STARTS = 5
_MAX_PREAMBLE = 50


class _Block(NamedTuple):
    tag: str  # lower-cased language tag, "" when untagged
    indented: bool  # the opening fence is indented (inside a markdown list)
    start: int  # line index of the opening fence
    end: int  # line index just past the closing fence (or the text)
    complete: bool


def _parse(source: str) -> ast.Module:
    """``ast.parse`` without the SyntaxWarning/DeprecationWarning noise of a model's code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def _fenced_blocks(lines: list[str]) -> list[_Block]:
    """Every fenced block in order; the last one is incomplete when its closing fence never came."""
    blocks, i = [], 0
    while i < len(lines):
        match = _FENCE_RE.fullmatch(lines[i])
        if not match or (match.group(2)[0] == "`" and "`" in match.group(3)):  # ```x``` is inline
            i += 1
            continue
        indent, fence, info = match.groups()
        closing, j = re.compile(f"{re.escape(fence[0])}{{{len(fence)},}}"), i + 1
        while j < len(lines) and not closing.fullmatch(lines[j].strip()):
            j += 1
        tag = _TAG_RE.match(info).group(1).lower()
        blocks.append(_Block(tag, bool(indent), i, min(j + 1, len(lines)), j < len(lines)))
        i = j + 1
    return blocks


def _block_text(lines: list[str], block: _Block) -> str:
    text = "\n".join(lines[block.start + 1 : block.end - block.complete])
    dedented = textwrap.dedent(text)
    return dedented if block.indented or _CODE_START_RE.match(dedented.lstrip()) else text


def _is_repl(text: str) -> bool:
    return text.lstrip().startswith(">>>")


def _from_repl(text: str) -> str:
    """A REPL session as a program: prompts stripped, output lines dropped."""
    kept = [line[4:] if line[3:4] == " " else line[3:] for line in (ln.lstrip() for ln in text.split("\n"))
            if line.startswith((">>>", "..."))]
    return "\n".join(kept)


def _looks_like_output(text: str) -> bool:
    """Whether an untagged block holds a program's output rather than a program."""
    try:
        tree = _parse(text if len(text) <= _MAX_CHARS else "pass")  # a huge block counts as code
    except Exception:  # SyntaxError, or a too-deep value: text with no code line is output
        return not _CODE_LINE_RE.search(text)
    return all(isinstance(stmt, ast.Expr) and not any(isinstance(node, ast.Call) for node in ast.walk(stmt))
               for stmt in tree.body)


def _opens_statement(line: str) -> bool:
    """Whether a line can begin a top-level statement (where a parseable prefix may end)."""
    return bool(line.strip()) and line[0] not in " \t)]}" and not _CLAUSE_RE.match(line)


def _parseable_end(lines: list[str], start: int) -> int:
    """Index just past the longest parseable run of lines from ``start``; ``start`` if none."""
    end = len(lines)
    for _ in range(_MAX_PARSES):
        while end > start and not lines[end - 1].strip():
            end -= 1
        if end == start:
            return start
        try:
            tree = _parse("\n".join(lines[start:end]))
        except SyntaxError as error:
            bad = start + min(max(error.lineno or 1, 1), end - start) - 1
            while bad > start and not _opens_statement(lines[bad]):
                bad -= 1
            end = bad
            continue
        except Exception:  # too deep for the parser: not a program worth reading
            return start
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr) and isinstance(last.value, ast.Name) and last.lineno > 1:
            end = start + last.lineno - 1  # a one-word prose line ("Output")
            continue
        return end
    return start


def _is_preamble(line: str) -> bool:
    """A column-0 comment, import or assignment line that belongs above the first definition."""
    if not line.strip() or line.startswith("#") or line[0] in " \t":
        return not line.strip() or line.startswith("#")
    try:
        body = _parse(line).body
    except Exception:
        return False
    return len(body) == 1 and isinstance(body[0], (ast.Assign, ast.Import, ast.ImportFrom))


def _plain_program(lines: list[str]) -> str | None:
    starts = (i for i, line in enumerate(lines) if _CODE_START_RE.match(line))
    for _, start in zip(range(_MAX_STARTS), starts):
        if len(lines) - start > _MAX_LINES or sum(map(len, lines[start:])) > _MAX_CHARS:
            return None
        end = _parseable_end(lines, start)
        if end > start:
            first = start
            while first > 0 and start - first < _MAX_PREAMBLE and _is_preamble(lines[first - 1]):
                first -= 1
            return "\n".join(lines[first:end])
    return None


def _continuation(lines: list[str]) -> str | None:
    first = next((line for line in lines if line.strip()), None)
    if first is None or first[0] not in " \t":
        return None
    kept = []
    for line in lines:
        if line.strip() and line[0] not in " \t" and not _CODE_START_RE.match(line):
            break
        kept.append(line)
    return "\n".join(kept)


def _from_region(text: str, complete_only: bool) -> str | None:
    """Rules 2-5 on the answer region of a completion."""
    lines = text.split("\n")
    blocks = _fenced_blocks(lines)
    python = [(block, _block_text(lines, block)) for block in blocks if block.tag in _PYTHON_TAGS]
    python = [(block, body) for block, body in python
              if body.strip() and (block.tag or not _looks_like_output(body))]
    complete = [body for block, body in python if block.complete]
    programs = [body for body in complete if not _is_repl(body)]
    defining = [body for body in programs if _DEFINES_RE.search(body) or body.lstrip("\n")[:1] in (" ", "\t")]
    if programs or complete:
        return (defining or programs)[-1] if programs else _from_repl(complete[-1])
    if complete_only:
        return None
    if python:  # only the last block can be incomplete; a fence glued to its last line closes it
        body = python[-1][1]
        glued = re.search(r"(?:`{3,}|~{3,})[ \t]*$", body, re.MULTILINE)
        body = body[: glued.start()] if glued else body
        return _from_repl(body) if _is_repl(body) else body
    for block in blocks:
        lines[block.start : block.end] = [""] * (block.end - block.start)
    return _continuation(lines) or _plain_program(lines) or _whole_script(lines)


def _whole_script(lines: list[str]) -> str | None:
    """Rule 6: a bare script (stdin/stdout tasks: ``n = int(input())`` ...) when the whole text
    parses and holds a statement that is more than a lone name or constant (so prose such as
    "Sure" or a bare number is not a program)."""
    text = "\n".join(lines).strip()
    if not text or len(text) > _MAX_CHARS or text.count("\n") > _MAX_LINES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError
        return None
    trivial = (ast.Name, ast.Constant)
    if any(not (isinstance(node, ast.Expr) and isinstance(node.value, trivial)) for node in tree.body):
        return text
    return None


def _finish(program: str | None) -> str | None:
    if program is None or not program.strip():
        return None
    return re.sub(r"\A(?:[ \t]*\n)+", "", program).rstrip() + "\n"


def extract_program(completion: str) -> str | None:
    """The program stated in ``completion`` (see the module docstring for the rules), or None."""
    text = completion.replace("\r\n", "\n").replace("\r", "\n")
    closed = max(_THINK_CLOSE_RE.finditer(text), key=re.Match.start, default=None)
    if closed is not None:
        text = text[closed.end() :]
    opened = _THINK_OPEN_RE.search(text)
    if opened is not None:
        return _finish(_from_region(text[opened.end() :], complete_only=True))
    answer = max(_ANSWER_OPEN_RE.finditer(text), key=re.Match.start, default=None)
    if answer is not None:
        close = _ANSWER_CLOSE_RE.search(text, answer.end())
        text = text[answer.end() : close.start() if close else len(text)]
    return _finish(_from_region(text, complete_only=False))


def _unparsed(program: str) -> str:
    """The ast form of a program or of a continuation body (raises when neither parses)."""
    first = next((line for line in program.split("\n") if line.strip()), "")
    if not first[:1].isspace():
        return ast.unparse(_parse(program))
    module = _parse("def _():\n" + program)
    body = ast.unparse(ast.Module(body=module.body[0].body, type_ignores=[]))
    rest = ast.unparse(ast.Module(body=module.body[1:], type_ignores=[]))
    return textwrap.indent(body, "    ") + ("\n" + rest if rest else "")


def normalise_program(program: str) -> str:
    """The cache-key form of ``program``; equal keys mean identical behaviour. Never raises."""
    text = program.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) <= _MAX_CHARS:
        try:
            return _unparsed(text)
        except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError
            pass
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())
