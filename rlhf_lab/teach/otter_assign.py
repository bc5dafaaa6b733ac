"""`otter assign` run quietly for `rlhf-lab assignments build`: what otter and its kernels print goes to a log file,
and a failure is one line that names the instructor's master, the questions whose tests fail against the solutions,
and the log that holds otter's whole report.

    run_otter_assign(copy_of_master, target, check=True, shown=master, log=out / "ppo_math-otter.log")
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

from rlhf_lab.core.files import write_atomic

__all__ = ["OTTER_HINT", "failing_questions", "run_otter_assign"]

OTTER_HINT = "the instructor tools need otter-grader: pip install 'rlhf-lab[instructor]' (or pip install otter-grader)"
_FAILED_CASE = re.compile(r"^\s*(\S+) - \d+ result:\s*\n\s*❌", re.MULTILINE)


def failing_questions(report: str) -> list[str]:
    """The questions with a failed test case in otter's report ("q1 - 2 result:" then "❌ Test case failed"), in
    order, each once."""
    return list(dict.fromkeys(_FAILED_CASE.findall(report)))


@contextlib.contextmanager
def _stderr_to(file):
    """Send file descriptor 2 (this process's stderr and that of the kernels it starts) to `file` for a while."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def run_otter_assign(master: Path, result: Path, check: bool, shown: Path | None = None,
                     log: Path | None = None) -> None:
    """Run `otter assign master result` (check: run every test against the solutions) with its output captured.
    On failure, otter's report and output go to `log` (when given) and a ValueError says in one line what failed
    in `shown` (the master the instructor knows; default `master`). A successful run removes an old `log`."""
    try:
        from otter.assign import main as otter_assign
    except ImportError as err:
        raise ModuleNotFoundError(OTTER_HINT) from err
    shown = master if shown is None else shown
    printed = io.StringIO()
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as kernels:
        try:
            with contextlib.redirect_stdout(printed), _stderr_to(kernels):
                otter_assign(str(master), str(result), no_pdfs=True, no_run_tests=not check)
        except Exception as err:
            kernels.seek(0)
            report = f"{type(err).__name__}: {err}"
            failing = failing_questions(report)
            what = (f"the tests of {', '.join(failing)} fail against the solutions" if failing else
                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
            where = ""
            if log is not None:
                write_atomic(log, f"otter assign {shown}\n\n{report}\n\n--- otter's output ---\n{printed.getvalue()}"
                                  f"\n--- its kernels' output ---\n{kernels.read()}\n")
                where = f"; otter's report: {log}"
            raise ValueError(f"otter assign failed on {shown}: {what}{where}") from err
    if log is not None and Path(log).exists():
        Path(log).unlink()
