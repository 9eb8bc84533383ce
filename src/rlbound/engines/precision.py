"""Floating-point formats of the torch engines: names, and whether a device computes bfloat16 natively.

``--dtype`` / ``-E dtype=`` take ``auto``, ``float32`` (``fp32``), ``bfloat16`` (``bf16``) or
``float16`` (``fp16``). For the tiny engine and the lab's training, ``auto`` is bfloat16 where the
device has native bfloat16 arithmetic and float32 elsewhere (:func:`native_bfloat16`):

* CPU: the instruction sets that multiply bfloat16 in hardware, AVX512-BF16 or AMX-BF16 on x86
  (``/proc/cpuinfo`` flags ``avx512_bf16``, ``amx_bf16``) and BF16 on Arm (``bf16`` in Linux's
  ``Features``, ``hw.optional.arm.FEAT_BF16`` on macOS). Without them torch emulates bfloat16
  through float32, slower than float32 itself;
* CUDA: ``torch.cuda.is_bf16_supported()``.

Samples differ with the format (rounding changes which token an inverse-CDF draw lands on now
and then), so the engines record the resolved format and a run refuses to be resumed in another.

What it does not do: no float16 autocast on CPU, no int8/fp8 quantisation, and no check that a
model's weights fit the chosen format's range (bfloat16 has float32's range; float16 does not).
"""

from __future__ import annotations

import functools
import platform
import subprocess

import torch

from rlbound.errors import RlboundError

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
"""Accepted names (aliases included) of the formats."""

_X86_FLAGS = ("avx512_bf16", "amx_bf16")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"`` (the name runs record)."""
    return str(dtype).removeprefix("torch.")


@functools.lru_cache(maxsize=None)
def cpuinfo_text() -> str:
    """Linux's ``/proc/cpuinfo`` (empty where it cannot be read): the CPU's instruction-set flags
    (x86 ``flags``, Arm ``Features`` lines)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


@functools.lru_cache(maxsize=None)
def _cpu_has_bfloat16() -> bool:
    machine = platform.machine().lower()
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True,
                                 text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return out.stdout.strip() == "1"
    for line in cpuinfo_text().splitlines():
        key, _, value = line.partition(":")
        words = set(value.split())
        if key.strip() == "flags" and any(flag in words for flag in _X86_FLAGS):
            return True
        if key.strip() == "Features" and machine in ("aarch64", "arm64") and "bf16" in words:
            return True
    return False


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 in hardware (see the module docstring)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_has_bfloat16()
    return False


def resolve_dtype(name: str, device: str | torch.device = "cpu", *, allowed: tuple[str, ...] = ("float32", "bfloat16"),
                  what: str = "dtype") -> torch.dtype:
    """The format ``name`` asks for on ``device``: ``auto`` is bfloat16 where it is native, else
    float32; an unknown name, or one outside ``allowed``, is a one-line error."""
    if name == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    dtype = DTYPES.get(str(name).lower())
    if dtype is None or dtype_name(dtype) not in allowed:
        raise RlboundError(f"{what} {name!r} is not one of auto, {', '.join(allowed)}")
    return dtype


def autocast(device_type: str, dtype: torch.dtype):
    """``torch.autocast`` to ``dtype`` for lower-precision formats, a no-op for float32: the forward
    passes of training in ``dtype`` with float32 weights (the tiny model keeps its logits float32)."""
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)
