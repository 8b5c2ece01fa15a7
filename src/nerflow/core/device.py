"""Device and precision choice: CUDA with mixed precision when present, else the CPU
(bf16 autocast when the CPU has native bf16: AMX or AVX512-BF16)."""

from __future__ import annotations

import contextlib
from functools import lru_cache
from pathlib import Path

# Heavy libraries (torch) are imported inside the functions that use them, on purpose:
# the CLI starts without them and a step loads only what it runs.


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str = "auto") -> tuple[str, str]:
    """Return (device, precision) with precision in fp32 | bf16 | fp16."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = (precision or "auto").lower()
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if precision == "auto":
        if device == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16() else "fp32"
    if precision == "fp16" and device == "cpu":
        precision = "fp32"  # fp16 autocast on CPU is slower than fp32 and less accurate
    return device, precision


def autocast(device: str, precision: str):

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device, dtype=dtype)
