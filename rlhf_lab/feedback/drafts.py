"""Answers a learner entered in a rater but has not submitted yet, kept on disk so that a kernel crash or restart
loses none of them (the raters in `rlhf_lab.ui` and their flag panel save one on every change and drop it once its
judgment is stored).

    book = DraftBook.for_store(store, "alice")   # None for an in-memory or read-only store
    book.put("item:5", [2, 6], fingerprint(item))  # what is on screen for item 5 (None: nothing; the draft goes)
    book.get("item:5")                           # {"answer": [2, 6], "saved_at": 1718000000.0, "of": "..."} or None
    book.drop("item:5")                          # its judgment is stored
    book.resume({5: ("item:5", fingerprint(item))}, {"item:6"})   # {5: {...}}; item 6 is judged: its draft goes
    book.take_note()                             # one line about trouble with the file since last asked, or ""

Keys are the store's judgment targets ("item:7", "thumbs:12"); answers are plain JSON values. Each draft carries the
`fingerprint` of the text judged, so a store made anew at the same path (the same ids for other items) never gets
an old answer filled in.

Where the file lives. A store in a SQLite file whose folder this user may write keeps its drafts beside it, in
`<store file>-drafts/<annotator>-<hash>.json` (e.g. `runs/feedback.db-drafts/alice-1f2e3d4c.json`): they live as long
as the store, wherever it is (on Colab, a store on Google Drive keeps its drafts when the runtime is recycled, and
the home folder does not). Any other store (PostgreSQL, a SQLite file in a folder this user may not write) keeps
them in a per-user folder: `$RLHF_LAB_DRAFTS`, else `$XDG_DATA_HOME/rlhf_lab/drafts`, else
`~/.local/share/rlhf_lab/drafts`, as `<annotator>-<hash of the store's URL and the annotator>.json`; the URL is the
one with the password hidden (`store.display_url`), so no password ever reaches a file name or a drafts file. An
in-memory store keeps nothing (it is gone after a restart anyway), nor does a read-only one (nothing can be
submitted to it). A run's `RLHFRun.create(..., overwrite=True)` deletes its store's drafts with the store.

The file is plain JSON, written whole or not at all (`core.files.write_atomic`); it is read with `json`, so opening
one never runs code. A damaged or unreadable file is moved aside (`<name>.damaged-<time>.json`, never deleted) and
the book starts empty; a file that can be neither read nor moved is left alone and nothing is written over it. A
write that fails (a full disk, no permission) leaves the old file; each of these is said once by `take_note`, and
none raises: judging goes on, only a restart would lose the answer on screen.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import time
from pathlib import Path

from rlhf_lab.core.files import read_json, write_atomic
from rlhf_lab.core.locks import folder_locked
from rlhf_lab.core.script import hide_password, os_words
from rlhf_lab.feedback.database import sqlite_file

__all__ = ["DraftBook", "DRAFTS_ENV", "drafts_folder", "fingerprint", "saved_words"]

DRAFTS_ENV = "RLHF_LAB_DRAFTS"
"""The environment variable naming the per-user drafts folder (for stores with no writable folder of their own)."""
FORMAT = "rlhf_lab drafts"


def drafts_folder() -> Path:
    """The per-user folder for drafts of stores that have no writable folder of their own (see the module doc)."""
    if os.environ.get(DRAFTS_ENV):
        return Path(os.environ[DRAFTS_ENV]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "rlhf_lab" / "drafts"


def saved_words(saved_at: float) -> str:
    """When a draft was saved, as a learner reads it: "14:05" today, "3 Jun 14:05" on another day."""
    then = time.localtime(saved_at)
    clock = time.strftime("%H:%M", then)
    return clock if then[:3] == time.localtime()[:3] else f"{then.tm_mday} {time.strftime('%b', then)} {clock}"


def _file_name(annotator: str, identity: str) -> str:
    """`<annotator>-<hash>.json`: the annotator's name made safe for any file system (letters, digits, - _ .), and a
    hash that tells apart names that read the same once made safe ("a b", "a_b") and, with `identity`, stores."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", annotator).strip("._")[:40] or "annotator"
    digest = hashlib.sha256(f"{identity}\n{annotator}".encode()).hexdigest()[:12]
    return f"{safe}-{digest}.json"


def fingerprint(thing) -> str:
    """A short digest of what a learner judges (an Item: its prompt and replies; a Response: its prompt and text),
    saved with each draft so that a draft is never filled in for other content that got the same id."""
    texts = [thing.prompt, *(r.text for r in getattr(thing, "responses", None) or [thing])]
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


def _trouble(err: OSError) -> str:
    """An OSError in a few words ("the disk is full", "...: permission denied ...")."""
    return "the disk is full" if err.errno == errno.ENOSPC else os_words(err)


def _valid(doc) -> bool:
    """Whether `doc` (a parsed drafts file) has the shape this module writes."""
    drafts = doc.get("drafts") if isinstance(doc, dict) else None
    return isinstance(drafts, dict) and all(
        isinstance(entry, dict) and "answer" in entry and isinstance(entry.get("saved_at"), (int, float))
        for entry in drafts.values())


class DraftBook:
    """One annotator's unsubmitted answers for one store, in one JSON file (see the module docstring)."""

    def __init__(self, path: str | Path, store_name: str = "", annotator: str = ""):
        self.path = Path(path)
        self.store_name, self.annotator = hide_password(store_name), annotator
        self._entries: dict | None = None  # what the file held when last read or written (None: not read yet)
        self._notes: list[str] = []
        self._failing = False  # a write failed and was said; said again only after one succeeds
        self._stuck = False  # the file could be neither read nor moved aside: never written over
        self.tidy = False  # True: the folder is the store's own (`<store file>-drafts`), removed once empty

    @classmethod
    def for_store(cls, store, annotator: str) -> DraftBook | None:
        """The drafts of `annotator` for `store`: beside a SQLite store's file when its folder may be written, else
        in the per-user `drafts_folder()`. None for an in-memory or read-only store (nothing to keep)."""
        url, name = getattr(store, "url", None), getattr(store, "display_url", None)
        if not isinstance(url, str) or not isinstance(name, str) or getattr(store, "read_only", False):
            return None
        if url.split("?")[0] in ("sqlite://", "sqlite:///:memory:") or url.startswith("sqlite:///file::memory:"):
            return None
        file = sqlite_file(url)
        if file is not None and os.access(file.absolute().parent, os.W_OK):
            file = file.absolute()
            book = cls(file.parent / f"{file.name}-drafts" / _file_name(annotator, ""), name, annotator)
            book.tidy = True
            return book
        return cls(drafts_folder() / _file_name(annotator, name), name, annotator)

    # ---- reading ---------------------------------------------------------------------------------------------------
    def entries(self) -> dict[str, dict]:
        """Every draft: {key: {"answer": ..., "saved_at": seconds since the epoch}} (a copy)."""
        return {key: dict(entry) for key, entry in self._cached().items()}

    def get(self, key: str) -> dict | None:
        """The draft for `key` as {"answer", "saved_at"}, or None when there is none."""
        entry = self._cached().get(key)
        return None if entry is None else dict(entry)

    def resume(self, targets: dict, judged) -> dict:
        """The drafts of a rater's items, `targets` ({item id: (key, fingerprint)}), by item id; first every draft
        whose key is in `judged` (what the store holds a judgment of: judged since the draft was saved) is dropped
        from the file. A draft saved for other content under the same key (the store was made anew at the same
        path) is not returned; it stays in the file until an answer for the item replaces it."""
        for key in set(self._cached()) & set(judged):
            self.drop(key)
        return {item_id: entry for item_id, (key, of) in targets.items()
                if (entry := self.get(key)) is not None and entry.get("of", of) == of}

    def take_note(self) -> str:
        """What went wrong with the file since the last call, in one line ("" when nothing did)."""
        notes, self._notes = self._notes, []
        return " ".join(notes)

    def _cached(self) -> dict:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict:
        """The drafts in the file now ({} when there is none); a damaged or unreadable file is moved aside."""
        try:
            doc = read_json(self.path)
            if _valid(doc):
                return doc["drafts"]
            why = "it is not a drafts file"
        except FileNotFoundError:
            return {}
        except ValueError:
            why = "it is not valid JSON"
        except OSError as err:
            why = f"it cannot be read: {_trouble(err)}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.stem}.damaged-{stamp}-{os.getpid()}{self.path.suffix}")
        try:
            os.replace(self.path, aside)
        except OSError as err:
            self._stuck = True
            self._notes.append(f"Your unsubmitted answers in {self.path} could not be used ({why}) nor moved aside "
                               f"({_trouble(err)}): answers you enter now are not kept for a restart.")
            return {}
        self._notes.append(f"Your saved unsubmitted answers could not be used ({why}): the file was moved aside to "
                           f"{aside}, and the rater goes on without them.")
        return {}

    # ---- writing ---------------------------------------------------------------------------------------------------
    def put(self, key: str, answer, of: str = "") -> None:
        """Keep `answer` (a JSON value) as the draft for `key`, with the time and `of` (the `fingerprint` of what is
        judged); None drops it. The same answer again writes nothing. A failed write is said once (`take_note`),
        never raised."""
        if answer is None:
            self.drop(key)
            return
        answer = json.loads(json.dumps(answer))  # as it will read back (tuples become lists)
        found = self._cached().get(key)
        if found is not None and found["answer"] == answer and found.get("of", "") == of:
            return
        self._update(key, {"answer": answer, "saved_at": time.time(), "of": of})

    def drop(self, key: str) -> None:
        """Forget the draft for `key` (its judgment is stored, or the learner cleared the answer)."""
        if key in self._cached():
            self._update(key, None)

    def _update(self, key: str, entry: dict | None) -> None:
        """Write the file again with `key` set to `entry` (None: removed), merged into what the file holds now (another
        rater or kernel of this annotator may have written it meanwhile); the file goes when no draft is left. The
        read and the write hold the folder's lock (`core.locks.folder_locked`): two kernels saving drafts at once
        take turns, so neither writes over a draft the other just saved."""
        if self._stuck:
            return
        with folder_locked(self.path.parent):
            self._merge(key, entry)

    def _merge(self, key: str, entry: dict | None) -> None:
        if self._stuck:
            return
        entries = self._read()
        if self._stuck:
            return
        entries.pop(key, None)
        if entry is not None:
            entries[key] = entry
        try:
            if entries:
                doc = {"format": FORMAT, "version": 1, "store": self.store_name, "annotator": self.annotator,
                       "drafts": entries}
                write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True))
            else:
                self.path.unlink(missing_ok=True)
                if self.tidy:  # no empty folder left beside the store
                    with contextlib.suppress(OSError):
                        self.path.parent.rmdir()
        except OSError as err:
            if not self._failing:
                self._notes.append(f"Your answer could not be kept for a restart ({_trouble(err)}, in {self.path}); "
                                   "it stays on screen: submit it to save it.")
            self._failing = True
            return
        self._failing = False
        self._entries = entries
