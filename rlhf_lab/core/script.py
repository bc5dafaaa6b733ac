"""The frame of a training script (`examples/train_ppo.py`, `examples/train_dpo.py`): its options checked before
torch loads, then the run, with bad input refused in one line (exit 2, no traceback) and the run's summary printed by
the main process as one JSON line.

    sys.exit(run_script("train_x.py", build_parser(), check, train))

`command_status` is the same refusal for the `rlhf-lab` commands, where a database that refused is one line too, with
a hint that fits what went wrong; `hide_password` masks the password of any URL in a message.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from typing import Callable

__all__ = ["OneLineParser", "run_script", "command_status", "hide_password", "one_line", "os_words", "refusal_words"]

_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)\S*@")


def hide_password(text) -> str:
    """`text` with the password of every URL in it (scheme://user:password@host) written as ***."""
    return _URL_PASSWORD.sub(r"\1***@", str(text))


def os_words(err: OSError) -> str:
    """An OSError in words a user acts on ("X: a file is in the way where a folder belongs"), not the system's
    "[Errno 20] Not a directory: 'X'"; a full disk says to free space; an error without a file name keeps its own
    message."""
    if err.errno == errno.ENOSPC:  # the system's "No space left on device", or a refusal that says more already
        return ("the disk is full (no space left on the device): free some space and run the command again"
                if err.strerror in (None, os.strerror(errno.ENOSPC)) else err.strerror)
    where = err.filename if err.filename is not None else ""
    words = {errno.ENOTDIR: f"{where}: a file is in the way where a folder belongs (a path goes through a file)",
             errno.EISDIR: f"{where} is a folder, where a file belongs: give a file's name",
             errno.EEXIST: f"{where} already exists: give another name",
             errno.EACCES: f"{where}: permission denied (choose a folder you may write to)"}.get(err.errno)
    return words if words and where else str(err)


def one_line(text) -> str:
    """A message on one line (a driver's message spans several: its lines joined), any URL's password hidden."""
    return hide_password(" ".join(line.strip() for line in str(text).splitlines() if line.strip()))


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose refusal is one line, `prog: error: message (see prog --help)`, and exit 2, not
    argparse's usage block before it. Its subcommands' parsers are of this class too (argparse makes them of the
    parent's class)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see: {self.prog} --help)\n")


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


def refusal_words(orig) -> str:
    """A database's refusal (the driver's error `orig`) on one line, with a hint that fits it."""
    lines = [line for line in str(orig).splitlines() if not line.strip().startswith("Is the server running")]
    text = one_line("\n".join(lines))  # libpq's own second line, a hint, gives way to the one below
    low = text.lower()
    if type(orig).__module__.split(".")[0] == "sqlite3":
        return f"{text} (free disk space, check the file's permissions, or give another --store)"
    if getattr(orig, "sqlstate", None) == "42501" or "permission denied" in low or "row-level security" in low:
        return (f"{text}: this URL may not do that here (a student's URL only judges): use the instructor's URL "
                "(`rlhf-lab class serve` printed it)")
    if "password authentication failed" in low:
        return f"{text} (is the URL's user name and password right? Use the URL as it was handed out)"
    if getattr(orig, "sqlstate", None) == "53300" or "too many c" in low:  # clients; connections for role
        return (f"{text} (the server has all the connections it allows: close stores in notebooks you are done with "
                "(store.close()) and try again, or have the instructor raise `rlhf-lab class serve --max-connections`)")
    if "database" in low and "does not exist" in low:
        return f"{text} (is the database name at the end of the URL right?)"
    at = re.search(r'server at "([^"]+)", port (\d+)', text)
    where = f"{at.group(1)}:{at.group(2)}" if at else "the URL's host and port"
    return f"{text} (is a PostgreSQL server running at {where}? `rlhf-lab class serve` starts one)"


def command_status(prog: str, work: Callable[[], object], errors: tuple[type[BaseException], ...]) -> int:
    """Run `work()` -> exit status 0; an error of a kind in `errors` (bad input), a database that refused
    (SQLAlchemy's OperationalError: disk full, a read-only file, a locked, lost or unreachable server, a wrong
    password; its ProgrammingError: e.g. a student's URL where the instructor's is needed), a full disk (OSError
    ENOSPC, as `core.files.ensure_free_space` raises) or a path the system cannot take (ENOTDIR: through a file;
    EISDIR: a folder where a file belongs; `os_words`) is one line on stderr naming `prog` (no URL's password in
    it), and exit status 2. Ctrl-C is one line and exit status 130."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        work()
    except KeyboardInterrupt:  # Ctrl-C: one line; what was saved (judgments, the last checkpoint) stays
        print(f"{prog}: stopped (Ctrl-C); what was saved before stays, and a run goes on with --resume where it "
              "has one", file=sys.stderr)
        return 130
    except errors as err:
        print(f"{prog}: error: {one_line(os_words(err) if isinstance(err, OSError) else err)}", file=sys.stderr)
        return 2
    except OperationalError as err:
        print(f"{prog}: error: the store refused: {refusal_words(err.orig)}", file=sys.stderr)
        return 2
    except ConnectionError as err:  # a store that would not open (`feedback.database.cannot_open`): its words
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except ProgrammingError as err:
        print(f"{prog}: error: the database refused: {refusal_words(err.orig)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk; a path through a file, or a folder where a file belongs: in words
        if err.errno not in (errno.ENOSPC, errno.ENOTDIR, errno.EISDIR):
            raise
        print(f"{prog}: error: {one_line(os_words(err))}", file=sys.stderr)
        return 2
    return 0
