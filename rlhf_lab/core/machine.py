"""What machine a figure was measured on: CPU model and the instruction sets that decide which path is fastest.

    machine_info()   # {"cpu": "...", "cores": 2, "avx2": True, "avx512f": True, "avx512_bf16": True, "amx": False,
                     #  "torch": "2.13.0+cpu", "threads": 2, "gpu": None, "kernels": "AVX512"}

Every bench script puts this in its last JSON line: the same code is about twice as fast on a CPU with AVX-512 and
native bfloat16 as on one with AVX2 only, so a figure without its machine cannot be compared.
"""

from __future__ import annotations

import functools
import os
import platform

import torch

__all__ = ["gpu_native_bf16", "cpu_features", "machine_info", "native_bf16"]

BF16_ENV = "RLHF_LAB_CPU_BF16"

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_features(cpuinfo: str) -> dict:
    """{"cpu": model name, "avx2", "avx512f", "avx512_bf16", "amx": bool} from the text of /proc/cpuinfo (the first
    processor's lines; every core of a machine has the same). Unknown fields are None."""
    model, flags = None, None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    found = {name: (name in flags) if flags is not None else None for name in FLAGS}
    found["amx"] = found.pop("amx_bf16")
    return {"cpu": model, **found}


def _this_cpu() -> dict:
    """`cpu_features` of this machine's /proc/cpuinfo; every field None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return cpu_features(f.read())
    except OSError:
        return cpu_features("")


def machine_info() -> dict:
    """The figures' machine: `cpu_features` of this one, its cores, torch's version and threads, the GPU, and
    "kernels": the instruction set torch's own CPU kernels run with (e.g. "AVX512", "AVX2"; lower than the CPU's when
    the environment caps it, as ATEN_CPU_CAPABILITY=avx2 does to run an AVX2-only machine's path on a newer one)."""
    info = _this_cpu()
    info["cpu"] = info["cpu"] or platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {**info, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "gpu": gpu, "kernels": capability}


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX): there a bf16 product runs
    2–4× faster than float32's (measured 2026-12 on 2 threads: 726 vs 173 GFLOP/s for 256×576·576×1536); on an
    AVX2-only CPU torch emulates bf16, slower than float32. The environment variable RLHF_LAB_CPU_BF16=0 or 1
    overrides the detection (read once per process)."""
    forced = os.environ.get(BF16_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{BF16_ENV} must be 0 or 1 (or unset to detect), got {forced!r}.")
    info = _this_cpu()
    return bool(info["avx512_bf16"] or info["amx"])


def gpu_native_bf16() -> bool:
    """Whether the current CUDA GPU multiplies bfloat16 in hardware: Ampere (compute capability 8.0) and newer, or
    any ROCm GPU. `torch.cuda.is_bf16_supported()` also says True on older GPUs (a Colab T4, 7.5), where bf16 is
    emulated, in float32 and slowly; there the trainers compute in float16 with loss scaling instead."""
    if not torch.cuda.is_available():
        return False
    return bool(torch.version.hip) or torch.cuda.get_device_capability()[0] >= 8
