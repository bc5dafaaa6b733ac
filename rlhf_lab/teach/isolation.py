"""How a student's notebook is walled off while it is graded: the command that starts `rlhf_lab.teach.sandbox`.

Two modes (the instructor guide, `assignments/README.md`, says what each one protects):

- `namespace` (when the grader runs as root and `unshare` and `setpriv` work, as on a JupyterHub server, a VM or a
  CI job): new PID, mount, network, IPC and UTS namespaces; fresh empty tmpfs over /tmp, /var/tmp, /dev/shm and over
  every folder the grader names (the build, the submissions, the grader's own scratch folders); then the notebook runs
  as the unprivileged user `nobody` with no capabilities and `no_new_privs`. A small root shell stays PID 1 of the
  namespace, so when the grader kills it (timeout or end) the kernel kills everything the student started, including
  `setsid` children.
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

__all__ = ["MODES", "SANDBOX_USER", "TEMP_ROOTS", "kept_paths", "namespace_available", "resolve_mode", "sandbox_env", "sandbox_command",
           "become_subreaper", "kill_children"]

MODES = ("auto", "namespace", "process")
SANDBOX_USER = 65534  # nobody / nogroup
_UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--ipc", "--uts"]
# PID 1 of the namespace: hide the named folders and the temp folders, then run the sandbox as nobody, not with
# `exec`, so that PID 1 keeps its parent-death signal (changing user clears it) and takes the namespace down with it.
_NAMESPACE_SCRIPT = r"""
IFS=':'; n=0
if [ -n "$RLHF_SANDBOX_KEEP" ]; then mount -t tmpfs -o size=1m rlhf-stage /mnt || exit 97; fi
for k in $RLHF_SANDBOX_KEEP; do n=$((n+1)); mkdir -p "/mnt/$n" && mount --bind "$k" "/mnt/$n" || exit 97; done
for d in /tmp /var/tmp /dev/shm; do
    if [ -d "$d" ]; then mount -t tmpfs -o size=1g,mode=1777 rlhf-tmp "$d" || exit 97; fi
done
n=0
for k in $RLHF_SANDBOX_KEEP; do
    n=$((n+1)); mkdir -p "$k" && mount --bind "/mnt/$n" "$k" && mount -o remount,bind,ro "$k" || exit 97
done
unset IFS
for d in "$@"; do if [ -d "$d" ]; then mount -t tmpfs -o size=64k,mode=0755 rlhf-hidden "$d" || exit 97; fi; done
setpriv --reuid={uid} --regid={uid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \
    "$RLHF_SANDBOX_PYTHON" -m rlhf_lab.teach.sandbox
"""
TEMP_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")


def kept_paths() -> list[str]:
    """The Python, its packages and the rlhf_lab package folder (not the checkout around it: its build/ and
    assignments/ hold the masters) where they live under a temp folder that the namespace
    replaces with an empty tmpfs (a CI job's fresh clone in /tmp): bound back read-only after the temp folders are
    replaced, before the named folders (the build, the masters) are hidden, so the sandbox can start."""
    import rlhf_lab

    wanted = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(rlhf_lab.__file__).resolve().parent}
    keep = sorted(str(p) for p in wanted if any(p.is_relative_to(t) for t in TEMP_ROOTS) and ":" not in str(p))
    return [k for k in keep if not any(k != o and Path(k).is_relative_to(o) for o in keep)]  # outermost only


@functools.lru_cache(maxsize=1)
def namespace_available() -> bool:
    """Whether this machine lets the grader use the `namespace` mode (tried once, with a trivial command)."""
    if os.name != "posix" or os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return False
    script = _NAMESPACE_SCRIPT.replace('-m rlhf_lab.teach.sandbox', '-c "import rlhf_lab"')
    env = {**os.environ, "RLHF_SANDBOX_PYTHON": sys.executable, "RLHF_SANDBOX_KEEP": ":".join(kept_paths())}
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
    import rlhf_lab

    package_root = str(Path(rlhf_lab.__file__).resolve().parent.parent)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "IPYTHONDIR": f"{home}/.ipython",
           "MPLCONFIGDIR": f"{home}/.matplotlib", "MPLBACKEND": "Agg", "PYTHONPATH": package_root,
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "RLHF_SANDBOX_PYTHON": sys.executable,
           "RLHF_SANDBOX_KEEP": ":".join(kept_paths())}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def sandbox_command(mode: str, hide: list[str | Path]) -> list[str]:
    """The argv that starts the sandbox in `mode` ("namespace" or "process"), hiding the folders in `hide`."""
    if mode == "namespace":
        folders = [str(Path(p).resolve()) for p in hide]
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
