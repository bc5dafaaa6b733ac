"""rlhf_lab.core.memory.reuse_freed_memory: glibc's malloc serves large tensors from its heap, or is left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, torch
from rlhf_lab.core.memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
done = reuse_freed_memory()
block = torch.empty(100 * 2**20 // 4)  # 100 MB: by default a fresh mapping of its own
print(done, libc.mallinfo2().hblkhd >= 100 * 2**20, libc.mallinfo2().arena >= 100 * 2**20)
"""

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc's malloc only")


def probe(env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@glibc
def test_large_tensors_come_from_the_heap_once_set():
    assert probe({"RLHF_LAB_MALLOC": "1"}) == ["True", "False", "True"]  # not mapped alone: inside the heap


@glibc
def test_rlhf_lab_malloc_0_leaves_malloc_alone():
    assert probe({"RLHF_LAB_MALLOC": "0"}) == ["False", "True", "False"]  # glibc's default: a mapping of its own

