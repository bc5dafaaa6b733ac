"""Wall time of the lessons at their default (full-parameter) settings, run in order by papermill like a learner would.

Lessons 2–5 share one run directory (lesson 2's judgments feed lesson 3's reward model, which lesson 4 optimises
against), so they run in order in one working directory. No rater is clicked: the simulated crowd stands in, as the
notebooks say. Each lesson's time includes starting its kernel and loading the model. Ends with one JSON line.

    python bench/lessons.py [--lessons 02,03,04,05] [--threads 2] [--out /tmp/lessons-full]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import papermill

from rlhf_lab.core.machine import machine_info

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", default="02,03,04,05", help="comma-separated lesson numbers, run in this order")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each kernel (OMP_NUM_THREADS)")
    parser.add_argument("--out", default="/tmp/rlhf-lab-lessons", help="working directory (emptied first)")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the kernels papermill starts
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    figures = {}
    for number in args.lessons.split(","):
        (path,) = NOTEBOOKS.glob(f"{number}_*.ipynb")
        start = time.perf_counter()
        papermill.execute_notebook(str(path), str(out / path.name), cwd=str(out), kernel_name="python3",
                                   progress_bar=False, parameters={"smoke": False})
        seconds = time.perf_counter() - start
        figures[f"{path.stem}_s"] = round(seconds, 1)
        print(f"{path.stem}: {seconds / 60:.1f} min", flush=True)
    figures["total_s"] = round(sum(figures.values()), 1)
    figures["threads"] = args.threads
    print(json.dumps({"machine": machine_info(), "model": "each lesson's default (smollm2-135m)",
                      **figures}))


if __name__ == "__main__":
    main()
