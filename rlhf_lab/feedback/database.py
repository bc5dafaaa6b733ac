"""Where a feedback store lives: a path or URL made into a SQLAlchemy URL, a foreign SQLite file (or, for a command
that only reads, a missing or empty one) refused before it is touched, and the SQLite connection settings (WAL, busy
timeout, BEGIN IMMEDIATE for writes) that let several kernels record into one file at once."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from rlhf_lab.core.script import refusal_words

__all__ = ["store_url", "sqlite_file", "refuse_foreign_sqlite", "refuse_missing_store", "no_store",
           "read_only_url", "configure_sqlite", "cannot_open", "serialize"]

LOCK_SPACE = 0x726C6866  # the first key of rlhf-lab's advisory locks on PostgreSQL ("rlhf")


def store_url(where: str | Path, make_folders: bool = True) -> str:
    """A SQLAlchemy URL for a path (its parent folders created, unless not `make_folders`), `:memory:` or a URL
    given as is. Anything but a str or a path is refused (TypeError): `FeedbackStore(None)` makes no file "None"."""
    if not isinstance(where, (str, os.PathLike)):
        raise TypeError(f"A feedback store is a file path or a database URL, e.g. FeedbackStore('runs/feedback.db'), "
                        f"not {where!r}.")
    where = str(where)
    if where == ":memory:":
        return "sqlite://"
    if where.startswith("sqlite:///") and make_folders and "?" not in where:  # a file's URL: its folders too
        Path(where[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if "://" in where:
        return where
    path = Path(where).expanduser().resolve()
    if make_folders:
        path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (as written: relative paths stay relative); None for any other URL."""
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def no_store(where) -> FileNotFoundError:
    """The error for a command that reads a store where there is none (`where` with any password hidden)."""
    return FileNotFoundError(f"no store at {where}: make one first, e.g. `rlhf-lab feedback simulate --store {where}`")


def refuse_missing_store(url: str, where) -> None:
    """For a command that only reads: refuse a SQLite file that does not exist or is empty (0 bytes), before
    SQLite would create it or write a new store's tables into it."""
    path = sqlite_file(url)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        raise no_store(where)


def refuse_foreign_sqlite(url: str) -> None:
    """Refuse, before touching it, an existing SQLite file that is not a feedback store: opening one would add
    tables to it and switch it to WAL. Read-only check: the file is left as it was."""
    path = sqlite_file(url)
    if path is not None and path.is_dir():
        raise ValueError(f"{path} is a folder, not a feedback store: give a file path such as {path / 'feedback.db'}")
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        ro = "?mode=ro" + ("" if os.access(path.parent, os.W_OK) else "&immutable=1")  # no folder for a WAL index
        with contextlib.closing(sqlite3.connect(path.resolve().as_uri() + ro, uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        raise ValueError(f"{path} is not a SQLite database, so not a feedback store: give the path of a store "
                         "(e.g. runs/feedback.db) or a new file name.") from None
    if tables and "schema_version" not in tables:
        raise ValueError(f"{path} is a SQLite database of something else (tables: {', '.join(sorted(tables)[:5])}), "
                         "not a feedback store; it was left untouched. Give a store's path or a new file name.")


def read_only_url(url: str) -> str | None:
    """For an existing SQLite file this process may not write, a URL that opens it read-only (immutable when its
    folder is not writable either, as SQLite then cannot make the WAL index it reads through); else None."""
    path = sqlite_file(url)
    if path is None or not path.is_file() or os.access(path, os.W_OK):
        return None
    return f"sqlite:///file:{path}?mode=ro&uri=true" + ("" if os.access(path.parent, os.W_OK) else "&immutable=1")


def configure_sqlite(engine, busy_timeout_s: float, read_only: bool = False) -> None:
    """WAL + busy timeout on every connection; we issue BEGIN ourselves (IMMEDIATE for writes)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event below open transactions
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if not read_only:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def serialize(conn, key: str) -> None:
    """Make the writers of `key` take turns until the end of the transaction on `conn`: a transaction-level advisory
    lock on PostgreSQL, so that two kernels creating a new store's tables, or recording the same annotator's judgment
    of one target (a double click, `replace=True` from two notebooks), run one after the other: the second sees the
    first's commit and is refused or replaces it in words, never with a constraint's traceback. Nothing on SQLite,
    whose writes already take turns (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":  # the key as a signed 32-bit number (any text, NUL included)
        number = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:4], "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, :key)"), dict(space=LOCK_SPACE, key=number))


def cannot_open(err: Exception, where: str, dialect: str) -> ConnectionError:
    """The one-line error for a database that would not open (`err`: SQLAlchemy's OperationalError; `where` with any
    password hidden): the driver's words, and what to check (`core.script.refusal_words` for a server)."""
    orig = getattr(err, "orig", None) or err
    if dialect != "sqlite":
        return ConnectionError(f"could not open the feedback store at {where}: {refusal_words(orig)}")
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    check = ("another kernel or program is writing it: try again in a moment" if "locked" in first else
             "check that its folder exists and that you may write there")
    return ConnectionError(f"could not open the feedback store at {where} ({first}): {check}")
