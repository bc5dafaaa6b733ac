"""The frame of a training script (`examples/train_ppo.py`, `examples/train_dpo.py`): its options checked before
torch loads, then the run, with bad input refused in one line (exit 2, no traceback) and the run's summary printed by
the main process as one JSON line.

    sys.exit(run_script("train_x.py", build_parser(), check, train))

`command_status` is the same refusal for the `rlhf-lab` commands, where a database that refused is one line too.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import Callable

__all__ = ["run_script", "command_status"]


def run_script(prog: str, parser: argparse.ArgumentParser, check: Callable, train: Callable[..., dict],
               argv: list[str] | None = None) -> int:
    """Parse `argv`, `check(args)` (a ValueError is a bad option: refused at once, before torch loads), then
    `train(args)` -> summary; a ValueError, KeyError, FileNotFoundError or SetupError there (a missing model among
    them) is one line on stderr and exit 2. The main process (RANK 0) prints the summary as JSON. -> exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser.parse_args(argv)
    try:
        check(args)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    from rlhf_lab.core.errors import SetupError

    try:
        summary = train(args)
    except (ValueError, KeyError, FileNotFoundError, SetupError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 0


def command_status(prog: str, work: Callable[[], object], errors: tuple[type[BaseException], ...]) -> int:
    """Run `work()` -> exit status 0; an error of a kind in `errors` (bad input), a database that refused
    (SQLAlchemy's OperationalError: disk full, a read-only file, a locked or lost server) or a full disk (OSError
    ENOSPC, as `core.files.ensure_free_space` raises) is one line on stderr naming `prog`, and exit status 2."""
    from sqlalchemy.exc import OperationalError

    try:
        work()
    except errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OperationalError as err:
        print(f"{prog}: error: the store refused: {err.orig} (free disk space, check the file's permissions, or give "
              "another --store)", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"{prog}: error: {err.strerror}", file=sys.stderr)
        return 2
    return 0
