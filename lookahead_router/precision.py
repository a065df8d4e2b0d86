"""The torch engine's numeric precision, a setting rather than an accident of the CPU, and the
hardware facts every result records beside its figures.

    resolve_precision()      # "fp32" or "bf16": what the setting below means on this machine
    environment()            # {"device", "precision", "cpu_flags", ...}: for every result JSON

The setting is "auto" (the default), "fp32" or "bf16": `lookahead --precision ...`, else
$LOOKAHEAD_PRECISION. "auto" is bf16 where bf16 matrix products are native -- a GPU that supports
them, or a CPU with AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm) that oneDNN may
use -- because the frozen backbones then run several times faster (3.2-3.8x on the 2-core CPU
machine with AMX: bench/results/precision_cpu.md); fp32 elsewhere. bf16 keeps 8 significant bits, so features made in bf16
differ from fp32 ones in the third significant digit, and figures made under "auto" on two kinds
of CPU differ slightly. Set fp32 for figures that reproduce on every machine. bf16 can be forced
on a CPU without native support too: it then runs emulated, slower than fp32, with bf16's rounding.

What the setting governs: the dtype of the frozen backbone on the torch feature engine
(``routers/features.py``), and mixed-precision training on a GPU (``training/engine.py``). The
ONNX engines run fp32 (or int8) whatever it says; trainable layers on a CPU train in fp32.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

import torch

from lookahead_router.errors import LookaheadError

PRECISION_ENV = "LOOKAHEAD_PRECISION"
AUTO, FP32, BF16 = "auto", "fp32", "bf16"
PRECISIONS = (AUTO, FP32, BF16)
DTYPES = {FP32: torch.float32, BF16: torch.bfloat16}
# Environment variables that cap the instruction sets oneDNN and PyTorch's kernels use, and so
# change both speed and numbers; a result records the ones that were set.
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
# The CPU features that decide how fast, and in which number format, the torch engine computes
# (torch.cpu.get_capabilities() reads them with cpuid, as oneDNN does).
NUMERIC_FLAGS = ("avx2", "fma3", "f16c", "avx512_f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                 "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",                      # x86
                 "neon", "fp16_arith", "bf16", "i8mm", "sve", "sve2", "sve_bf16")      # Arm


class PrecisionError(LookaheadError):
    """A precision setting that is none of PRECISIONS."""


def check_precision(value: str) -> str:
    if value not in PRECISIONS:
        raise PrecisionError(f"unknown precision {value!r}; choose from {', '.join(PRECISIONS)}")
    return value


def precision_setting() -> str:
    """The process's setting: $LOOKAHEAD_PRECISION (set by `lookahead --precision`), else auto."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower() or AUTO
    try:
        return check_precision(value)
    except PrecisionError as exc:
        raise PrecisionError(f"${PRECISION_ENV}: {exc}") from None


def use_precision(setting: str) -> None:
    """Set the process's precision. It is kept in the environment, so that the processes this
    one starts (`accelerate launch` workers) compute alike."""
    os.environ[PRECISION_ENV] = check_precision(setting)


def cpu_flags() -> list[str]:
    """The numeric-relevant features of this machine's CPU, as cpuid reports them."""
    capabilities = torch.cpu.get_capabilities()
    return [flag for flag in NUMERIC_FLAGS if capabilities.get(flag) is True]


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether bf16 matrix products are native here: on a GPU, its own answer; on a CPU, a bf16
    instruction set that oneDNN is also allowed to use (ONEDNN_MAX_CPU_ISA may forbid it)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    flags = set(cpu_flags())
    hardware = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return hardware and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(setting: str | None = None) -> str:
    """"fp32" or "bf16": ``setting`` (default: the process's), with auto decided by ``native_bf16``."""
    setting = check_precision(setting) if setting is not None else precision_setting()
    if setting != AUTO:
        return setting
    return BF16 if native_bf16() else FP32


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = torch.cpu.get_capabilities().get("cpu_name") or platform.processor() or "CPU"
    return f"CPU ({cpu}, {platform.machine()}, {torch.get_num_threads()} threads)"


def environment() -> dict:
    """What a result depends on besides its inputs: the device, the torch engine's precision (and
    the setting it came from), and the CPU's numeric features. Every result JSON carries it."""
    return {"device": device_name(), "precision": resolve_precision(), "precision_setting": precision_setting(),
            "native_bf16": native_bf16(), "cpu_flags": cpu_flags(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if os.environ.get(k)}, "torch": torch.__version__,
            "python": platform.python_version()}
