"""How a student's notebook is walled off while it is graded: the command that starts `rlhf_lab.teach.sandbox`.

Two modes (the instructor guide, `assignments/README.md`, says what each one protects):

- `namespace` (when the grader runs as root and `unshare` and `setpriv` work, as on a JupyterHub server, a VM or a
  CI job): new PID, mount, network, IPC and UTS namespaces and a new root built from a list, not from the grader's
  filesystem minus some folders: the system folders (`SYSTEM_PATHS`: /usr, /etc, the /bin and /lib links), the
  Python that runs the grader and the rlhf_lab package folder, read-only (`visible_paths`); fresh empty tmpfs as
  /tmp, /var/tmp and /dev/shm; /dev with five devices; a new /proc. Nothing else of the machine is there: no
  checkout around the package (its `assignments/`, `build/lib/...` copies of the masters, `.git`), no home folder,
  no build, submissions or grader folder. Copies of the masters inside what is shown (an installed rlhf-lab ships
  them in site-packages: `master_copies`) and every folder the grader names are covered with empty tmpfs. Then the
  notebook runs as the unprivileged user `nobody` with no capabilities and `no_new_privs`. A small root shell stays
  PID 1 of the namespace, so when the grader kills it (timeout or end) the kernel kills everything the student
  started, including `setsid` children.
- `process` (anywhere else): a separate process in its own session, with a scrubbed environment, in a fresh scratch
  copy; killed by process group. It runs as you: it can read what you can read. On Linux the grader is a child
  subreaper (`become_subreaper`), so children that call `setsid` or double-fork are re-parented to it and killed
  (`kill_children`) when the submission ends; elsewhere they escape the kill.

`--isolation auto` (the default) picks `namespace` when `namespace_available()` says it works, else `process`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["MODES", "SANDBOX_USER", "SYSTEM_PATHS", "STAGE_CANDIDATES", "visible_paths", "master_copies",
           "stage_folder", "sandbox_python", "namespace_available", "resolve_mode", "sandbox_env", "sandbox_command",
           "become_subreaper", "kill_children"]

MODES = ("auto", "namespace", "process")
SANDBOX_USER = 65534  # nobody / nogroup
SYSTEM_PATHS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
STAGE_CANDIDATES = ("/mnt", "/media", "/srv")  # an empty tmpfs goes over the first one free, to build the new root in
_UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts"]
# PID 1 of the namespace: build the new root in a tmpfs over $RLHF_SANDBOX_STAGE (fresh temp folders first, then the
# shown paths bound read-only into it, symlinks such as /lib -> usr/lib copied), pivot into it, drop the old root,
# hide what the grader names, then run the sandbox as nobody, not with `exec`, so that PID 1 keeps its parent-death
# signal (changing user clears it) and takes the namespace down with it.
_NAMESPACE_SCRIPT = r"""
R="$RLHF_SANDBOX_STAGE"
[ -n "$R" ] && mount -t tmpfs -o size=16m,mode=0755 rlhf-root "$R" || exit 97
mkdir -p "$R/tmp" "$R/var/tmp" "$R/dev" "$R/proc" "$R/sys" || exit 97
mount -t tmpfs -o size=64k,mode=0755 rlhf-dev "$R/dev" && mkdir "$R/dev/shm" || exit 97
for d in /tmp /var/tmp /dev/shm; do mount -t tmpfs -o size=1g,mode=1777 rlhf-tmp "$R$d" || exit 97; done
for n in null zero full random urandom; do touch "$R/dev/$n" && mount --bind "/dev/$n" "$R/dev/$n" || exit 97; done
ln -s /proc/self/fd "$R/dev/fd" || exit 97
IFS='
'
for d in $RLHF_SANDBOX_SHOW; do
    if [ -L "$d" ]; then
        mkdir -p "$R$(dirname "$d")" && ln -s "$(readlink "$d")" "$R$d" || exit 97
    elif [ -d "$d" ]; then
        mkdir -p "$R$d" && mount --rbind "$d" "$R$d" && mount -o remount,bind,ro "$R$d" || exit 97
    fi
done
unset IFS
mount -t proc proc "$R/proc" || exit 97
if [ -d /sys ]; then mount --rbind /sys "$R/sys" && mount -o remount,bind,ro "$R/sys" || exit 97; fi
mkdir "$R/.old" && cd "$R" && pivot_root . .old && umount -l /.old && rmdir /.old && cd / || exit 97
for d in "$@"; do if [ -d "$d" ]; then mount -t tmpfs -o size=64k,mode=0755 rlhf-hidden "$d" || exit 97; fi; done
setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
    "$RLHF_SANDBOX_PYTHON" -m rlhf_lab.teach.sandbox
"""


def _outermost(paths: set[Path]) -> list[Path]:
    return sorted(p for p in paths if not any(p != o and p.is_relative_to(o) for o in paths))


def visible_paths() -> list[str]:
    """What a namespace sandbox sees of this machine, read-only: the system folders (symlinks among them stay
    symlinks), the Python that runs the grader (its prefixes, the folder of the real interpreter, its site folders)
    and the rlhf_lab package folder alone, never the checkout around it. Outermost folders only."""
    import rlhf_lab

    links = {Path(p) for p in SYSTEM_PATHS if Path(p).is_symlink()}
    folders = {Path(p).resolve() for p in SYSTEM_PATHS if Path(p).is_dir()}  # the targets of the links too
    folders |= {Path(p).resolve() for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    folders.add(Path(os.path.realpath(sys.executable)).parent)
    folders |= {Path(p).resolve() for p in sys.path if Path(p).name in ("site-packages", "dist-packages")}
    folders.add(Path(rlhf_lab.__file__).resolve().parent)
    shown = [*links, *_outermost({p for p in folders if p.is_dir()})]
    return [str(p) for p in shown if "\n" not in str(p)]


def master_copies(shown: list[str] | None = None) -> list[str]:
    """Copies of the master notebooks inside the folders a namespace sandbox sees: an rlhf-lab installed into a
    Python's site folder ships them as `rlhf_lab/assignment_sources`. The sandbox covers each with an empty tmpfs."""
    site = "lib*/python*/*-packages/rlhf_lab/assignment_sources"
    patterns = ("assignment_sources", "rlhf_lab/assignment_sources", site, f"local/{site}")
    found = {p.resolve() for root in (shown if shown is not None else visible_paths()) if not Path(root).is_symlink()
             for pattern in patterns for p in Path(root).glob(pattern) if p.is_dir()}
    return sorted(str(p) for p in found)


def stage_folder(shown: list[str]) -> str | None:
    """A folder to build the new root in (an empty tmpfs goes over it, inside the namespace only): the first of
    `STAGE_CANDIDATES` that exists and holds nothing the sandbox must see."""
    for candidate in STAGE_CANDIDATES:
        if Path(candidate).is_dir() and not Path(candidate).is_symlink() and not any(
                Path(p).is_relative_to(candidate) for p in shown):
            return candidate
    return None


def sandbox_python() -> str:
    """The grader's Python as the sandbox starts it: under the resolved prefix (a venv keeps its pyvenv.cfg beside
    it), since the new root holds resolved paths only."""
    try:
        return str(Path(sys.prefix).resolve() / Path(sys.executable).relative_to(sys.prefix))
    except ValueError:
        return os.path.realpath(sys.executable)


def _package_root() -> str:
    """The folder that holds the rlhf_lab package the grader runs (a checkout or site-packages): the sandbox's
    PYTHONPATH, so it imports the same rlhf_lab (in the new root that folder holds the package alone)."""
    import rlhf_lab

    return str(Path(rlhf_lab.__file__).resolve().parent.parent)


def _namespace_env() -> dict:
    shown = visible_paths()
    return {"RLHF_SANDBOX_PYTHON": sandbox_python(), "RLHF_SANDBOX_SHOW": "\n".join(shown),
            "RLHF_SANDBOX_STAGE": stage_folder(shown) or ""}


@functools.lru_cache(maxsize=1)
def namespace_available() -> bool:
    """Whether this machine lets the grader use the `namespace` mode (tried once, with a trivial command)."""
    if os.name != "posix" or os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return False
    script = _NAMESPACE_SCRIPT.replace('-m rlhf_lab.teach.sandbox', '-c "import rlhf_lab"')
    env = {**os.environ, **_namespace_env(), "PYTHONPATH": _package_root()}
    try:
        probe = subprocess.run([*_UNSHARE, "sh", "-c", script.format(uid=SANDBOX_USER), "sh"],
                               capture_output=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def resolve_mode(mode: str) -> str:
    """`auto` -> the best mode this machine allows; `namespace` where it is not available -> a ValueError saying so."""
    if mode not in MODES:
        raise ValueError(f"unknown isolation {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "auto":
        return "namespace" if namespace_available() else "process"
    if mode == "namespace" and not namespace_available():
        raise ValueError("--isolation namespace needs root, `unshare` and `setpriv` (util-linux) and a kernel that "
                         "allows namespaces; run the grader as root on a machine or VM you control, or use "
                         "--isolation process (see assignments/README.md)")
    return mode


def sandbox_env(home: str, threads: int | None) -> dict:
    """The whole environment of a sandbox: no variable of the grader's (tokens, paths) reaches student code."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "IPYTHONDIR": f"{home}/.ipython",
           "MPLCONFIGDIR": f"{home}/.matplotlib", "MPLBACKEND": "Agg", "PYTHONPATH": _package_root(),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", **_namespace_env()}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def sandbox_command(mode: str, hide: list[str | Path]) -> list[str]:
    """The argv that starts the sandbox in `mode` ("namespace" or "process"), hiding the folders in `hide`."""
    if mode == "namespace":
        folders = [*master_copies(), *(str(Path(p).resolve()) for p in hide)]
        return [*_UNSHARE, "sh", "-c", _NAMESPACE_SCRIPT.format(uid=SANDBOX_USER), "sh", *folders]
    if mode == "process":
        return [sys.executable, "-m", "rlhf_lab.teach.sandbox"]
    raise ValueError(f"no sandbox command for mode {mode!r}")


def become_subreaper() -> bool:
    """Linux: make this process the child subreaper of its descendants, so that orphans (a `setsid` daemon, a
    double fork) are re-parented to it rather than to init and `kill_children` can find them. False elsewhere."""
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def kill_children() -> int:
    """SIGKILL and reap every child of this process, again until none is left (orphans keep arriving while their
    parents die); return how many were killed. Reads /proc: a no-op where there is none."""
    me, killed = os.getpid(), 0
    for _ in range(100):
        try:
            entries = [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return killed
        children = []
        for pid in entries:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                children.append(int(pid))
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            killed += 1
    return killed
