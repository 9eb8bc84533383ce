"""The tiny engine's fused decoding kernels (``decode_kernels.cpp``), compiled on first use.

A CPU decoding step of a tiny model is mostly the fixed cost of small torch operations (about
forty per layer), not arithmetic. The C++ kernels do a layer's RMSNorms, SwiGLU gate and whole
attention (rotary embedding, cache write, shared-prefix and own-column scores, float32 softmax,
weighted values) in three calls, leaving torch only the matmuls; in bfloat16 on a CPU with
AVX512-BF16 one call (``decode_layers``) runs every layer, its matmuls as bfloat16 dot products
over weights packed once per batch (a library GEMM's fixed cost per call, about 17 us in bfloat16
on an AMD EPYC, was most of a small step's matmul time); see
:meth:`rlbound.engines.tiny.model.TinyLlama.decode_step`.

They are built with torch's C++ extension machinery (``torch.utils.cpp_extension.load_inline``:
a C++ compiler and ninja, both checked) for this machine's instruction set, once per machine, in
torch's extension directory (``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``;
concurrent builders wait on torch's lock); the first build takes about a minute on 2 cores.

``decode`` modes (the engine option ``-E decode=``): ``fused`` (these kernels; an error says what
is missing), ``eager`` (the model's torch operations only), ``auto`` (fused when they build, else
eager with a one-line warning). Samples from the two modes differ by float rounding now and then,
so the engine records the mode.

What it does not do: no GPU kernels (``fused`` is CPU only), no autograd (decoding only), no
prefill (prompts go through the model's ordinary forward).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path
from types import ModuleType

import torch

from rlbound.engines.precision import cpuinfo_text
from rlbound.errors import RlboundError

SOURCE = Path(__file__).with_name("decode_kernels.cpp")
DECODE_MODES = ("auto", "fused", "eager")
_FUNCTIONS = ["rms_norm", "silu_mul", "decode_attention", "sample_rows", "step_uniforms", "bf16_dot_available",
              "packed_linear", "decode_layers"]


def _cpu_signature() -> str:
    """What the build depends on besides the source: torch, Python, and the CPU's instruction set
    (the kernels are compiled with ``-march=native``, so a cache shared by different machines
    must not hand one machine another's binary)."""
    flags = next((line for line in cpuinfo_text().splitlines() if line.startswith(("flags", "Features"))), "")
    return f"{torch.__version__}|{sys.version_info[:2]}|{platform.machine()}|{flags}"


def _missing_tools() -> str | None:
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None and shutil.which("g++") is None:
        return f"a C++ compiler ({compiler} or g++ on PATH; e.g. apt install g++)"
    try:
        from torch.utils.cpp_extension import is_ninja_available
    except ImportError:  # pragma: no cover - torch without its extension tools
        return "torch.utils.cpp_extension"
    _put_ninja_on_path()
    if not is_ninja_available():
        return "ninja (pip install ninja)"
    return None


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the ``ninja`` package (a requirement) installs it beside
    the Python executable, which is not on PATH in a virtual environment used without activating
    it: add that directory to this process's PATH."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    bin_dir = getattr(ninja, "BIN_DIR", None)
    if bin_dir and shutil.which("ninja", path=bin_dir):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@functools.lru_cache(maxsize=None)
def _build() -> ModuleType | str:
    """The compiled module, or why it could not be had (a one-line reason)."""
    missing = _missing_tools()
    if missing:
        return f"the fused decoding kernels need {missing}"
    from torch.utils.cpp_extension import load_inline

    source = SOURCE.read_text(encoding="utf-8")
    digest = hashlib.sha256((source + _cpu_signature()).encode()).hexdigest()[:12]
    try:
        return load_inline(
            name=f"rlbound_tiny_decode_{digest}",
            cpp_sources=[source],
            functions=_FUNCTIONS,
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - a compiler's failure comes in many types
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return f"the fused decoding kernels did not build ({first[:200]})"


def fused_kernels() -> ModuleType:
    """The compiled kernels (built on first call); :class:`RlboundError` saying what is missing
    or what failed otherwise."""
    built = _build()
    if isinstance(built, str):
        raise RlboundError(f"{built}; or decode with -E decode=eager")
    return built


def resolve_decode(mode: str, device: torch.device) -> str:
    """``"fused"`` or ``"eager"`` for the engine option ``decode`` (see the module docstring)."""
    if mode not in DECODE_MODES:
        raise RlboundError(f"tiny engine: decode must be one of {', '.join(DECODE_MODES)}, got {mode!r}")
    if mode == "eager":
        return "eager"
    if device.type != "cpu":
        if mode == "fused":
            raise RlboundError(f"tiny engine: decode=fused runs on the CPU only, not {device}")
        return "eager"
    if mode == "fused":
        fused_kernels()
        return "fused"
    built = _build()
    if isinstance(built, str):
        _warn_eager(built)
        return "eager"
    return "fused"


@functools.lru_cache(maxsize=None)
def _warn_eager(reason: str) -> None:
    print(f"rlbound: {reason}; decoding with torch operations (slower)", file=sys.stderr)
