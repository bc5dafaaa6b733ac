"""rlhf_lab.core.machine: the CPU's model and instruction sets, read from /proc/cpuinfo, in every bench's JSON line."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from rlhf_lab.core.machine import cpu_features, machine_info

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse2 avx avx2 fma
"""


def test_cpu_features_tell_an_avx512_bf16_xeon_from_an_avx2_epyc():
    assert cpu_features(XEON) == {"cpu": "Intel(R) Xeon(R) Processor", "avx2": True, "avx512f": True,
                                  "avx512_bf16": True, "amx": True}
    assert cpu_features(EPYC) == {"cpu": "AMD EPYC 7B12", "avx2": True, "avx512f": False, "avx512_bf16": False,
                                  "amx": False}
    assert cpu_features("") == {"cpu": None, "avx2": None, "avx512f": None, "avx512_bf16": None, "amx": None}


def test_machine_info_describes_this_machine_in_json():
    info = json.loads(json.dumps(machine_info()))
    assert info["cpu"] and info["cores"] >= 1 and info["threads"] >= 1 and info["torch"]
    assert set(info) >= {"avx2", "avx512f", "avx512_bf16", "amx", "gpu", "kernels"}
    if info["avx2"]:  # capped by the environment, as when emulating an AVX2-only machine: the line says so
        code = "import json; from rlhf_lab.core.machine import machine_info; print(json.dumps(machine_info()))"
        capped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}).stdout
        assert json.loads(capped)["kernels"] == "AVX2" and json.loads(capped)["avx512f"] == info["avx512f"]


def test_every_bench_script_ends_with_a_json_line_that_names_its_machine():
    """The last `print(json.dumps({...}))` of each bench script (its figures line) has a "machine" key whose value is
    `machine_info()`."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    missing, checked = [], 0
    for script in sorted(bench.glob("*.py")):
        prints = [node for node in ast.walk(ast.parse(script.read_text()))
                  if isinstance(node, ast.Call) and ast.unparse(node.func) == "print" and node.args
                  and ast.unparse(node.args[0]).startswith("json.dumps(")]
        if not prints:
            continue  # a helper module (e.g. unseen_taste.py), not a bench
        checked += 1
        last = max(prints, key=lambda node: node.lineno).args[0].args[0]
        keys = {ast.unparse(k): ast.unparse(v) for k, v in zip(last.keys, last.values) if k is not None} \
            if isinstance(last, ast.Dict) else {}
        if keys.get("'machine'") != "machine_info()":
            missing.append(script.name)
    assert checked >= 12 and not missing, f"bench scripts whose JSON line lacks machine_info(): {missing}"


def test_auto_mixed_precision_is_bf16_on_a_cpu_that_has_it_and_float32_elsewhere(cpu_bf16):
    from rlhf_lab.core.hf import make_accelerator

    cpu_bf16(True)
    assert make_accelerator("auto").mixed_precision == "bf16"
    cpu_bf16(False)
    assert make_accelerator("auto").mixed_precision == "no"
    cpu_bf16(True)
    assert make_accelerator("no").mixed_precision == "no"  # asked for float32: float32


def test_auto_mixed_precision_on_gpus_is_bf16_on_ampere_and_fp16_with_loss_scaling_on_a_t4(monkeypatch, cpu_bf16):
    """A T4 (compute capability 7.5) says yes to `torch.cuda.is_bf16_supported()` (bf16 emulated, slowly): the
    trainers' "auto" asks for the GPU's hardware instead, so a T4 computes in fp16 with loss scaling; a model loads
    in float32 there and in bf16 on an A100 or H100 (8.0, 9.0)."""
    import pytest
    import torch

    from rlhf_lab.core.hf import bf16_compute, resolve_precision
    from rlhf_lab.core.machine import gpu_native_bf16
    from rlhf_lab.policy.models import default_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # what a T4 says
    monkeypatch.setattr(torch.version, "hip", None)
    for capability, precision, dtype in (((7, 5), "fp16", torch.float32), ((8, 0), "bf16", torch.bfloat16),
                                         ((9, 0), "bf16", torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert gpu_native_bf16() == (precision == "bf16")
        assert resolve_precision("auto", "cuda") == precision, capability
        assert bf16_compute("auto", "cuda") == (precision == "bf16")  # the reward model's: float32 on a T4
        assert default_dtype("cuda") == dtype
        assert resolve_precision("auto", "cuda", deepspeed=True) == ("bf16" if precision == "bf16" else "no")
        assert resolve_precision("fp16", "cuda") == "fp16" and resolve_precision("no", "cuda") == "no"
    for native in (True, False):  # the CPU's choice is unchanged: bf16 where it has it, never fp16
        cpu_bf16(native)
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "no")
        assert resolve_precision("auto", "cpu", deepspeed=True) == "no"
    with pytest.raises(ValueError, match="'fp16' .*needs a CUDA GPU and no DeepSpeed; here \\(cpu\\)"):
        resolve_precision("fp16", "cpu")  # accelerate would compute in float32 without a word
    with pytest.raises(ValueError, match="here \\(cuda, DeepSpeed\\)"):
        resolve_precision("fp16", "cuda", deepspeed=True)

