"""The program that runs inside the sandbox for one code check, and the value codec it shares with
the host.

This file is run as a script (``python3 -E -s main.py``) inside :mod:`rlbound.verify.sandbox`; it
imports only the standard library, so the host can send its source as is. The host imports it too,
for :func:`encode_value` / :func:`decode_value` and :data:`HARNESS_VERSION`: one codec, two sides.

The job arrives as one marshalled dict on standard input (``marshal``: the host writes it and the
sandbox reads it before the program runs; nothing marshalled ever travels back)::

    {"mode": "function" | "stdio", "program": str, "entry_point": str,
     "inputs": [encoded argument lists] | "stdin": [str], "input_timeouts": [seconds],
     "nonce": str, "output_cap": bytes per stdio test, "not_none": bool}

``not_none`` (MBPP+'s tasks whose outputs are match objects): a return value that is not a bool is
reported as whether it is not None, the way evalplus compares them.

Results leave as *frames*, one line each on the file descriptor that was standard output when the
harness started: ``\\x1eRLB<nonce> <json>\\n``. Frames: ``{"loaded": true}`` or
``{"load_error": "..."}``; per input ``{"i", "out", "t"}`` (function mode: the encoded return
value), ``{"i", "stdout", "t"}`` (stdio mode), ``{"i", "exc": "Type: message"}``,
``{"i", "timeout": true}`` or ``{"i", "bad": "why"}`` (a return value that is not plain data);
finally ``{"done": n}``.

What this file decides: nothing. It never sees an expected output; it only reports what the
program returned or printed, as plain data. The program runs in the same interpreter and can
write fake frames, kill the harness or exit early; the host (:mod:`rlbound.verify.code`) treats a
missing, repeated or malformed frame as a failure, so none of that can make a pass.

Function mode: the program (its example usage already removed by the host:
:func:`rlbound.verify.code.without_examples`) is run once, then each input is passed as fresh
objects to ``entry_point(*args)`` under a per-input ``SIGALRM`` deadline, with ``print`` output
discarded.
Stdio mode: for each test, file descriptors 0 and 1 are pointed at that test's input and a fresh
output file, and the program runs as ``__main__`` (``input()``, ``sys.stdin.read()`` and
``open(0)`` all work); ``SystemExit`` with code 0 or None ends a test normally.

The value codec (plain data only): ``None``, ``bool``, ``int``, ``float`` (nan and infinities
included), ``str``, ``list`` as themselves in JSON; ``tuple``, ``set``, ``frozenset``, ``dict``,
``complex``, ``bytes``, ``int`` past 64 bits (in hex) as ``{"t": kind, "v": ...}``. Types are checked exactly
(``type(x) is int``): a subclass, such as an object whose ``__eq__`` is always true, is not plain
data, so it cannot reach the comparison at all. The one exception is a dict subclass, read as the
plain dict it holds through ``dict.items`` itself.
"""

from __future__ import annotations

import io
import marshal
import math
import os
import sys
import time

try:  # the C module: ``signal`` imports ``enum``, a tenth of a check's start-up
    import _signal as signal
except ImportError:  # pragma: no cover - other interpreters
    import signal

HARNESS_VERSION = 10
FRAME_MARK = "\x1eRLB"
MAX_DEPTH = 64
MAX_NODES = 2_000_000
# Ints past 64 bits travel as hex: decimal conversion is quadratic in the digits (both writing it
# here and parsing it on the host; HumanEval/130's outputs have thousands), hex is linear.
_HEX_BITS = 64
# A dict subclass (Counter, OrderedDict, defaultdict: evalplus compares a Counter with ==) is read
# as the dict it holds, through dict's own C method captured here, so no method the program
# defined (``__eq__``, ``items``, ``__iter__``) is ever called.
_dict_items = dict.items


class NotPlainData(ValueError):
    """A value the codec refuses (its type, depth or size)."""


def encode_value(value, _depth=0, _budget=None):
    """``value`` as JSON-able plain data; raises :class:`NotPlainData` for anything else."""
    budget = _budget if _budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise NotPlainData("the value is too large")
    if _depth > MAX_DEPTH:
        raise NotPlainData("the value is nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        if value.bit_length() > _HEX_BITS:
            return {"t": "int", "v": hex(value)}
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        return {"t": "float", "v": repr(value)}
    if kind is complex:
        return {"t": "complex", "v": [encode_value(value.real, _depth + 1, budget),
                                      encode_value(value.imag, _depth + 1, budget)]}
    if kind is bytes:
        return {"t": "bytes", "v": value.hex()}
    if kind is list:
        flat = _flat_list(value)
        if flat is not None:
            budget[0] -= len(flat)
            if budget[0] < 0:
                raise NotPlainData("the value is too large")
            return flat
        return [encode_value(v, _depth + 1, budget) for v in value]
    if kind is tuple:
        return {"t": "tuple", "v": [encode_value(v, _depth + 1, budget) for v in value]}
    if kind is set or kind is frozenset:
        items = [encode_value(v, _depth + 1, budget) for v in value]
        return {"t": kind.__name__, "v": items}
    if kind is dict or issubclass(kind, dict):
        return {"t": "dict", "v": [[encode_value(k, _depth + 1, budget), encode_value(v, _depth + 1, budget)]
                                   for k, v in _dict_items(value)]}
    raise NotPlainData(f"a value of type {kind.__module__}.{kind.__qualname__} is not plain data")


_BIG = 1 << _HEX_BITS


def _flat_list(value: list) -> list | None:
    """A list of only small ints and finite floats, or only str/bool/None, as is (a pass or two
    in C, where the element-by-element path is the slow part of large outputs); else None."""
    if all(type(v) is int or type(v) is float for v in value):
        try:
            if value and not (max(value) < _BIG and min(value) > -_BIG and math.isfinite(math.fsum(value))):
                return None  # a huge int, an infinity or a NaN: the slow path encodes them
        except OverflowError:  # a sum past the float range: let the slow path look at each
            return None
        return list(value)
    if all(v is None or type(v) is str or type(v) is bool for v in value):
        return list(value)
    return None


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode_value(data, _depth=0):
    """The Python value that :func:`encode_value` encoded; raises ValueError on anything else."""
    if _depth > MAX_DEPTH + 1:
        raise ValueError("nested too deeply")
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode_value(v, _depth + 1) for v in data]
    if kind is not dict or set(data) != {"t", "v"}:
        raise ValueError("not an encoded value")
    tag, v = data["t"], data["v"]
    if tag == "tuple":
        return tuple(decode_value(x, _depth + 1) for x in _as_list(v))
    if tag == "set":
        return {decode_value(x, _depth + 1) for x in _as_list(v)}
    if tag == "frozenset":
        return frozenset(decode_value(x, _depth + 1) for x in _as_list(v))
    if tag == "dict":
        pairs = [_as_list(p) for p in _as_list(v)]
        if any(len(p) != 2 for p in pairs):
            raise ValueError("a dict item is not a pair")
        return {decode_value(k, _depth + 1): decode_value(x, _depth + 1) for k, x in pairs}
    if tag == "complex":
        re_, im = (decode_value(x, _depth + 1) for x in _as_list(v))
        if type(re_) is not float or type(im) is not float:
            raise ValueError("a complex part is not a float")
        return complex(re_, im)
    if tag == "float" and v in _FLOATS:
        return _FLOATS[v]
    if tag == "int" and type(v) is str:
        return int(v, 16)
    if tag == "bytes" and type(v) is str:
        return bytes.fromhex(v)
    raise ValueError(f"unknown tag {tag!r}")


def _as_list(v):
    if type(v) is not list:
        raise ValueError("expected a list")
    return v


_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 0x7F: "\\u007f"})
_ESCAPES.update({i: f"\\u{i:04x}" for i in range(0xD800, 0xE000)})  # lone surrogates


def to_json(value) -> str:
    """JSON text of an encoded value or a frame record (what :func:`encode_value` makes: None,
    bool, int, finite float, str, list, dict with str keys), without importing :mod:`json`
    (its import is a fifth of a check's start-up). The host reads it with ``json.loads``."""
    kind = type(value)
    if kind is str:
        return '"' + value.translate(_ESCAPES) + '"'
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float:
        if not math.isfinite(value):
            raise NotPlainData("a non-finite float outside the codec")
        return repr(value)
    if kind is list:
        if all(type(v) is int or type(v) is float for v in value):  # finite: encode_value saw to it
            return "[" + ",".join(map(repr, value)) + "]"
        return "[" + ",".join(map(to_json, value)) + "]"
    if kind is dict:
        return "{" + ",".join(to_json(str(k)) + ":" + to_json(v) for k, v in value.items()) + "}"
    raise NotPlainData(f"{kind.__name__} is not JSON")


# --- inside the sandbox --------------------------------------------------------------------------


class _Deadline(BaseException):
    """Raised by the per-input alarm (a BaseException, so ``except Exception`` does not stop it)."""


def _on_alarm(signum, frame):
    raise _Deadline()


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - a hostile __str__
        text = ""
    return f"{type(exc).__name__}: {text[:200]}"


class _Frames:
    def __init__(self, fd: int, nonce: str):
        self.fd, self.prefix = fd, f"{FRAME_MARK}{nonce} "

    def send(self, record: dict) -> None:
        data = (self.prefix + to_json(record) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


class _Discard(io.TextIOBase):
    """Where a function-mode program's prints go: nowhere (a gigabyte of them costs no memory)."""

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        return len(text)


def _run_function(job: dict, frames: _Frames) -> None:
    sys.stdout = sys.stderr = _Discard()
    try:
        code = compile(job["program"], "<program>", "exec")
        namespace = {"__name__": "__rlbound_program__", "__builtins__": __builtins__}
        signal.setitimer(signal.ITIMER_REAL, max(job["input_timeouts"] or [1.0]) + 1.0)
        exec(code, namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        function = namespace[job["entry_point"]]
        if not callable(function):
            raise TypeError(f"{job['entry_point']} is not a function")
    except BaseException as exc:  # noqa: BLE001 - whatever the program does is reported
        signal.setitimer(signal.ITIMER_REAL, 0)
        frames.send({"load_error": "timeout while loading" if isinstance(exc, _Deadline) else _describe(exc)})
        return
    frames.send({"loaded": True})
    not_none = bool(job.get("not_none"))
    for i, (args, limit) in enumerate(zip(job["inputs"], job["input_timeouts"])):
        record: dict = {"i": i}
        try:
            values = decode_value(args)
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, limit)
            result = function(*values)
            signal.setitimer(signal.ITIMER_REAL, 0)
            record["t"] = time.perf_counter() - start
            if not_none and type(result) is not bool:
                result = result is not None
            try:
                record["out"] = encode_value(result)
            except NotPlainData as exc:
                record = {"i": i, "bad": str(exc)}
            except RecursionError:
                record = {"i": i, "bad": "the value is nested too deeply"}
        except _Deadline:
            record = {"i": i, "timeout": True}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
            signal.setitimer(signal.ITIMER_REAL, 0)
            record = {"i": i, "exc": _describe(exc)}
        frames.send(record)


def _run_stdio(job: dict, frames: _Frames) -> None:
    try:
        code = compile(job["program"], "<program>", "exec")
    except BaseException as exc:  # noqa: BLE001
        frames.send({"load_error": _describe(exc)})
        return
    frames.send({"loaded": True})
    cap = int(job.get("output_cap", 1 << 20))
    for i, (text, limit) in enumerate(zip(job["stdin"], job["input_timeouts"])):
        with open("in.txt", "w", encoding="utf-8") as fh:
            fh.write(text)
        in_fd = os.open("in.txt", os.O_RDONLY)
        out_fd = os.open("out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(in_fd, 0)
        os.dup2(out_fd, 1)
        for fd in {in_fd, out_fd} - {0, 1}:  # a program that closed 0 or 1 hands that number back
            os.close(fd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
        sys.stderr = io.StringIO()
        record: dict = {"i": i}
        start = time.perf_counter()
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
            except SystemExit as stop:
                if stop.code not in (None, 0):
                    raise
            sys.stdout.flush()
            signal.setitimer(signal.ITIMER_REAL, 0)
            record["t"] = time.perf_counter() - start
        except _Deadline:
            record = {"i": i, "timeout": True}
        except BaseException as exc:  # noqa: BLE001
            signal.setitimer(signal.ITIMER_REAL, 0)
            record = {"i": i, "exc": _describe(exc)}
        if "t" in record:
            with open("out.txt", "rb") as fh:
                data = fh.read(cap + 1)
            if len(data) > cap:
                record = {"i": i, "bad": "output_limit"}
            else:
                record["stdout"] = data.decode("utf-8", errors="replace")
        frames.send(record)


def main() -> None:
    job = marshal.loads(sys.stdin.buffer.read())  # written by the host, before the program runs
    sys.set_int_max_str_digits(0)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    frames = _Frames(os.dup(1), job["nonce"])
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)  # the job is read; the program reads nothing it was not given
    os.dup2(devnull, 1)  # print()s at the file-descriptor level go nowhere
    os.close(devnull)
    signal.signal(signal.SIGALRM, _on_alarm)
    if job["mode"] == "stdio":
        _run_stdio(job, frames)
    else:
        _run_function(job, frames)
    frames.send({"done": len(job.get("inputs") or job.get("stdin") or [])})
    os._exit(0)  # no atexit handlers or finalisers of the program run after the results


if __name__ == "__main__":
    main()
