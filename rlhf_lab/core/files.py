"""Files that are either complete or absent, never half written (a crash or a full disk leaves the old version).

    kind = SaveKind("reward_model.json", "a reward model", "reward_model")  # its marker file, and names for messages
    with atomic_directory("runs/x/reward_model", kind=kind) as tmp:   # write into tmp; it replaces the target
        ...
    write_atomic("runs/x/evaluation.csv", text)            # one file, same promise
    write_atomic_all({path_a: text_a, path_b: text_b})     # several: all on disk before any replaces an old one
    verify_digests(folder, file_digests(folder))           # checksums saved with a folder, checked on load
    ensure_free_space(folder, needed, "the checkpoint")    # before a large write: a full disk is one clear line

A directory is written into a hidden temporary sibling, flushed to disk, then renamed into place with `os.replace`,
and the folder holding it is flushed too, so a power cut cannot undo the rename.
Only a previous save of the same kind is replaced (the folder holds the writer's marker file: `SaveKind`), or an
empty folder: a folder with anything else in it (a learner's feedback.db and notes), or a file, is refused before
anything is written (`check_replaceable`). A file someone put into a previous save later (notes beside a checkpoint)
is not lost when the save is replaced: one that its manifest does not list is copied into the new save
(`keep_unlisted_files`). Replacing an existing directory takes two renames (old one aside, new one
in); a crash between them leaves the old one aside under a hidden name (`aside_copies` finds it). Temporary
directories left by a crash are hidden and removed by the next write (never one another process is still
filling: `core.locks.being_written`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from rlhf_lab.core.locks import being_written, hold_while_writing

__all__ = ["SaveKind", "check_replaceable", "atomic_directory", "publish_directory", "write_atomic", "write_atomic_all",
           "aside_copies", "existing_or_aside", "file_digests", "write_manifest", "verify_digests", "read_json",
           "ensure_free_space", "file_above", "keep_unlisted_files"]


def _fsync_tree(path: Path) -> None:
    """Flush every file and folder under `path` to disk, so the rename never publishes data still in the page cache."""
    for item in path.rglob("*"):
        if item.is_file():
            with item.open("rb") as f:
                os.fsync(f.fileno())
        elif item.is_dir():
            _fsync_folder(item)
    _fsync_folder(path)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so a rename in it survives a power cut (a kill never undoes one). Systems
    that cannot open or flush a folder (Windows, some network filesystems) skip it: the rename itself is atomic."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SaveKind:
    """What a writer of whole folders saves: `marker`, the file (or folder) every save of its holds (written last:
    its manifest), `what` ("a reward model") and `folder` (a name for a folder of its own, "reward_model") for the
    message that refuses another folder."""

    marker: str
    what: str
    folder: str


def check_replaceable(path: str | Path, kind: SaveKind | None) -> None:
    """Raise ValueError, in one line, unless a save of `kind` may replace `path`: absent, an empty folder, or a
    previous save of the same kind (it holds `kind.marker`). A file, or a folder with anything else in it, is
    refused: replacing it would delete the user's files. `kind` None: the path is rlhf-lab's own (a cache), replaced
    whatever it holds."""
    path = Path(path)
    if kind is None or not (path.exists() or path.is_symlink()):
        return
    instead = f"save it to a folder of its own, e.g. {(path if path.is_dir() else path.parent) / kind.folder}"
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder {kind.what} wrote: nothing was replaced; {instead}")
    if (path / kind.marker).exists():
        return
    foreign = sorted(p.name for p in path.iterdir())
    if foreign:
        raise ValueError(f"{path} holds files {kind.what} does not write ({', '.join(foreign[:5])}"
                         f"{', ...' if len(foreign) > 5 else ''}): nothing was replaced; {instead}")


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, kind: SaveKind | None):
    """Yield a hidden temporary directory; on a clean exit it replaces `path`, on an error it is removed. `kind`
    says what is saved: a `path` that is not a previous save of that kind (nor empty) is refused before anything is
    written (`check_replaceable`); None only for rlhf-lab's own folders (a cache), replaced whatever they hold."""
    path = Path(path)
    check_replaceable(path, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if not being_written(stale):  # a crash's leftover, not another kernel's save of the same folder under way
            shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    held = hold_while_writing(tmp)
    try:
        yield tmp
        publish_directory(tmp, path, kind=kind)
    finally:
        if held is not None:
            os.close(held)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def publish_directory(tmp: str | Path, path: str | Path, *, kind: SaveKind | None) -> None:
    """Flush every file under the finished directory `tmp` to disk and rename it to `path` (an existing `path`, a
    previous save of `kind` as `check_replaceable` requires, is set aside first and removed after): what
    `atomic_directory` does on a clean exit, for writers that fill `tmp` from several processes
    (`core.sharded_checkpoint`)."""
    tmp, path = Path(tmp), Path(path)
    check_replaceable(path, kind)  # again: files may have appeared in `path` while `tmp` was written
    if kind is not None:
        previous = path if path.is_dir() else next(reversed(aside_copies(path)), None)  # a crash's copy set aside
        if previous is not None:
            keep_unlisted_files(previous, tmp, kind.marker)
    _fsync_tree(tmp)
    if path.exists():
        aside = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(path, aside)
        os.replace(tmp, path)
    else:
        os.replace(tmp, path)
    _fsync_folder(path.parent)
    for stale in aside_copies(path):  # this one, and any an earlier crash left: `path` is whole now
        shutil.rmtree(stale, ignore_errors=True)


def keep_unlisted_files(previous: Path, new: Path, marker: str) -> list[str]:
    """Copy into the new save `new` every file under the previous save `previous` that its manifest (`marker`, a JSON
    file with "sha256": {relative path: digest}, `write_manifest`) does not list: a file someone put there after it
    was saved. Returns their relative paths. A previous save without such a manifest lists nothing to keep. A kept
    file that the new save also writes is refused in one line (ValueError), before anything is replaced."""
    try:
        listed = json.loads((previous / marker).read_text(encoding="utf-8")).get("sha256")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(listed, dict):
        return []
    kept = sorted(p.relative_to(previous).as_posix() for p in previous.rglob("*")
                  if p.is_file() and p.relative_to(previous).as_posix() not in {*listed, marker})
    clash = [name for name in kept if (new / name).exists()]
    if clash:
        raise ValueError(f"{previous} holds {', '.join(clash[:3])}, which the earlier save did not write and this one "
                         f"would overwrite: nothing was replaced; move {'it' if len(clash) == 1 else 'them'} out of "
                         f"the folder first")
    for name in kept:
        (new / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(previous / name, new / name)
    return kept


def existing_or_aside(path: str | Path, marker: str, what: str = "checkpoint") -> Path:
    """`path` when it holds `marker` (a file name), else the newest copy an interrupted replace set aside
    (`aside_copies`); FileNotFoundError when there is neither."""
    path = Path(path)
    if (path / marker).is_file():
        return path
    aside = aside_copies(path)
    if not aside:
        raise FileNotFoundError(f"No {what} at {path} (expected a directory with {marker}).")
    return aside[-1]


def aside_copies(path: str | Path) -> list[Path]:
    """Old versions of `path` that an interrupted `atomic_directory` replace left aside, oldest first."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a file atomically: a temporary sibling, flushed, then renamed over `path`. `text` is written as UTF-8;
    bytes as they are."""
    write_atomic_all({path: text})


def write_atomic_all(contents: dict) -> None:
    """Write several files ({path: text or bytes}), each whole: every one goes to a flushed temporary sibling first,
    and only when all are on disk are they renamed into place, in the dict's order (put the file that says the set is
    complete last). A full disk or an error while writing leaves every old file as it was; a crash can split the set
    only during the renames, which take microseconds."""
    staged = []
    try:
        for path, text in contents.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
            staged.append((tmp, path))
            with (open(tmp, "wb") if isinstance(text, bytes) else open(tmp, "w", encoding="utf-8")) as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            os.replace(tmp, path)
        for folder in dict.fromkeys(path.parent for _, path in staged):
            _fsync_folder(folder)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()


def file_digests(folder: str | Path, skip: str | None = None, names=None) -> dict[str, str]:
    """SHA-256 of every file under `folder` (but the one named `skip`: the manifest that holds them; only those in
    `names`, relative paths, when given), by relative path. Saved with a model or checkpoint; `verify_digests`
    checks them when it is loaded."""
    folder, out = Path(folder), {}
    wanted = None if names is None else set(names)
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != skip
                       and (wanted is None or p.relative_to(folder).as_posix() in wanted)):
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        out[file.relative_to(folder).as_posix()] = digest.hexdigest()
    return out


def write_manifest(folder: str | Path, name: str, meta: dict) -> None:
    """Write `meta` as the JSON file `name` in `folder`, with "sha256": `file_digests` of every other file there
    (write it last: the manifest of a saved model or checkpoint, checked by `verify_digests` on load)."""
    folder = Path(folder)
    (folder / name).write_text(json.dumps({**meta, "sha256": file_digests(folder, skip=name)}, indent=1))


def verify_digests(folder: str | Path, expected: dict[str, str], what: str = "folder") -> None:
    """Raise ValueError naming the first file under `folder` whose SHA-256 differs from `expected` (or is gone):
    flipped bytes never load silently."""
    folder = Path(folder)
    found = file_digests(folder, names=expected)
    for name, digest in expected.items():
        if found.get(name) != digest:
            how = "is missing" if name not in found else "does not match the checksum saved with it"
            raise ValueError(f"{folder / name} {how}: the {what} is damaged (a disk error or an edit after saving). "
                             f"Use another copy, or make it again.")


def read_json(path: str | Path):
    """A JSON file's content; a file that is not JSON raises a ValueError naming it (and where it stops parsing)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the file is damaged or was edited; use another copy, "
                         "or make it again.") from None


def ensure_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Raise OSError(ENOSPC) with a message that says what to do when the disk that holds `folder` (or its nearest
    existing parent) has fewer than `needed` bytes free: checked before a large write, so a full disk is one clear
    line and not a library's error from a half-written file (which the atomic write discards anyway)."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"Not enough disk space for {what}: it needs about {needed / 1e9:.2f} GB and "
                      f"{free / 1e9:.2f} GB is free on the disk of {existing}. Free some space (an old run folder, "
                      "say) and run it again: what was saved before is intact.")


def file_above(path: str | Path) -> Path | None:
    """The nearest existing parent of `path` when it is a file, not a folder (so `path` cannot be made), else None:
    checked before a long job, so "afile/out.csv" is one clear line up front and not NotADirectoryError at the end."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
