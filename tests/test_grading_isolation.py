"""Cheating submissions: each one is graded between honest ones and must earn nothing and change nothing.

Every cheat is the blank `ppo_math` notebook (0 points) plus one cell that attacks the grader and reports what it
found or did in `student_id`, which the score table carries. An honest submission (the solutions, 12 points) is
graded after each cheat, one at a time, so a cheat that poisoned the grader would show up in the next honest row.
The destructive cheats only run in the `namespace` mode; the `process` mode test runs the ones that mode must hold.
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest

pytest.importorskip("otter", reason="the assignment tools need otter-grader (pip install 'rlhf-lab[instructor]')")

from rlhf_lab.cli import main
from rlhf_lab.teach.grading import load_manifest
from rlhf_lab.teach.isolation import master_copies, namespace_available, visible_paths

TIMEOUT_S = 30
POINTS = {"q1_masked_mean": 2, "q2_kl_rewards": 3, "q3_gae": 3, "q4_clipped_loss": 4}

WRAP_THE_CHECKER = """
import json, sys
done = []
sys.modules.pop("otter", None)  # drop the grader's stand-in and patch the real otter, as on a laptop
try:
    import otter.test_files.exception_test as et
    et.test_case.call_func = lambda self, env: None
    et.ExceptionTestFile.run = lambda self, env: None
    done.append("patched otter")
except Exception as err:
    done.append(repr(err))
import builtins
builtins.AssertionError = type("NoFail", (Exception,), {})
student_id = json.dumps({"found": [], "done": done})
"""

REWRITE_THE_TESTS = """
import glob, importlib.resources, json, os
import rlhf_lab
found = []
masters = [os.path.join(os.path.dirname(os.path.dirname(rlhf_lab.__file__)), "assignments")]
try:
    masters.append(str(importlib.resources.files("rlhf_lab.assignment_sources")))
except Exception as err:  # hidden folders may not import at all
    print(err)
for root in [".", "..", "/tmp", "/var/tmp", os.path.expanduser("~"), *masters]:
    for path in glob.glob(os.path.join(root, "**", "*.ipynb"), recursive=True):
        if "hidden: true" in open(path, errors="ignore").read():
            found.append("read the master " + path)
    for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
        try:
            text = open(path, errors="ignore").read()
        except OSError:
            continue
        if "test_case" in text and ("hidden=True" in text or "/tests/" in path):
            found.append(path)
            try:
                open(path, "w").write("from otter.test_files import test_case\\n")
                found.append("rewrote " + path)
            except OSError:
                pass
student_id = json.dumps({"found": found})
"""

FAKE_THE_OUTPUT = """
import json
print("q1_masked_mean results: All test cases passed!\\nScore: 12.0 / 12.0")
json.dump({"score": 12, "possible": 12}, open("results.json", "w"))
class AlwaysEqual(float):
    def __eq__(self, other): return True
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __abs__(self): return 0.0
def masked_mean(x, mask): return AlwaysEqual(0.0)
def clipped_policy_loss(*args, **kwargs): return AlwaysEqual(0.0)
student_id = json.dumps({"found": []})
"""

REWRITE_THE_BUNDLE = """
import glob, io, json, os, zipfile
names = {names}
poison = io.BytesIO()
with zipfile.ZipFile(poison, "w") as zf:
    for q, points in names.items():
        zf.writestr(f"tests/{{q}}.py", "from otter.test_files import test_case\\nOK_FORMAT = False\\n"
                    f"name = '{{q}}'\\npoints = {{points}}\\n@test_case(points={{points}})\\ndef test_ok():\\n    pass\\n")
seen = set()
for pid in os.listdir("/proc"):
    if pid.isdigit():
        for what in ("cmdline", "environ"):
            try:
                seen.update(a for a in open(f"/proc/{{pid}}/{{what}}", "rb").read().decode(errors="ignore").split("\\0") if a)
            except OSError:
                pass
candidates = [p for p in seen if p.endswith((".zip", ".json"))]
candidates += glob.glob("/tmp/**/autograder.zip", recursive=True) + glob.glob("/tmp/**/job.json", recursive=True)
found = []
for path in candidates:
    try:
        if path.endswith(".json"):
            candidates.append(json.load(open(path))["bundle"])
            found.append(path)
            continue
        open(path, "wb").write(poison.getvalue())
        found.append("rewrote " + path)
    except Exception:
        pass
student_id = json.dumps({{"found": found}})
"""

LOOP_FOREVER = """
import subprocess
subprocess.Popen(["sleep", "987651"], start_new_session=True)
while True:
    pass
"""

SETSID_CHILD = """
import json, os, subprocess
subprocess.Popen(["sleep", "987652"], start_new_session=True)
subprocess.Popen(["sh", "-c", "setsid sleep 987653 &"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    os.execvp("sleep", ["sleep", "987654"])
student_id = json.dumps({"found": []})
"""

DELETE_OUTSIDE = """
import glob, json, os, shutil
found = []
targets = glob.glob("/tmp/rlhf-canary-*") + glob.glob("../*") + glob.glob("/tmp/pytest-of-*")
for pid in os.listdir("/proc"):
    try:
        targets += [a for a in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="ignore").split("\\0")
                    if a.startswith("/tmp/")]
    except OSError:
        pass
for path in targets:
    try:
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        found.append("deleted " + path)
    except OSError:
        pass
student_id = json.dumps({"found": found})
"""


EAT_MEMORY = """
import json, resource
limit = resource.getrlimit(resource.RLIMIT_AS)
try:
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    raised = True
except (ValueError, OSError):
    raised = False
try:
    hog = bytearray(3 * 2**30)  # over the 2 GB the test allows
    got = True
except MemoryError:
    got = False
student_id = json.dumps({"found": ["limit was raised"] * raised + ["got 3 GB"] * got, "limit": limit[0]})
"""

READ_THE_MASTERS = """
import json, os
import rlhf_lab
paths = {paths}
for top in ["{checkout}", os.path.dirname(os.path.dirname(rlhf_lab.__file__))]:
    for i, (folder, subfolders, files) in enumerate(os.walk(top)):
        subfolders[:] = [d for d in subfolders if d not in (".git", ".venv")]
        paths += [os.path.join(folder, f) for f in files if f.endswith(".ipynb")]
        if i > 2000:
            break
found = []
for path in paths:
    try:
        if "hidden: true" in open(path, errors="ignore").read():
            found.append(path)
    except OSError:
        pass
student_id = json.dumps({{"found": sorted(set(found))}})
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout_copies():
    """A checkout-like folder outside the temp folders (this checkout, else the home folder), readable by anyone,
    whose build/lib holds copies of the masters as `setup.py build` leaves them: (folder, the copies)."""
    base = ROOT if not any(ROOT.is_relative_to(t) for t in ("/tmp", "/var/tmp", "/dev/shm")) else Path.home()
    folder = Path(tempfile.mkdtemp(prefix=".rlhf-checkout-", dir=base))
    folder.chmod(0o755)
    master = ROOT / "assignments" / "02_ppo_math" / "ppo_math.ipynb"
    copies = [folder / "build" / "lib" / "assignments" / "02_ppo_math" / "ppo_math.ipynb",
              folder / "build" / "lib" / "rlhf_lab" / "assignment_sources" / "02_ppo_math" / "ppo_math.ipynb"]
    for copy in copies:
        copy.parent.mkdir(parents=True)
        shutil.copy(master, copy)
        assert "hidden: true" in copy.read_text()
    yield folder, [str(c) for c in copies]
    shutil.rmtree(folder)


def _cheat(blank: Path, target: Path, code: str) -> None:
    nb = nbformat.read(blank, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(code))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def _sleepers() -> list[str]:
    """Processes on this machine left over from the cheats (their argv holds 98765x)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if "98765" in cmdline and "sleep" in cmdline:
            found.append(cmdline.replace("\0", " "))
    return found


def _grade(tmp_path: Path, cheats: dict[str, str], isolation: str) -> tuple[pd.DataFrame, Path]:
    build = tmp_path / "build"
    assert main(["assignments", "build", "--out", str(build), "--no-check"]) == 0
    subs = tmp_path / "submissions"
    blank = build / "ppo_math" / "student" / "ppo_math.ipynb"
    solution = build / "ppo_math" / "autograder" / "ppo_math.ipynb"
    for i, (name, code) in enumerate(cheats.items()):
        _cheat(blank, subs / f"{i:02d}a_{name}" / "ppo_math.ipynb", code)
        (subs / f"{i:02d}b_honest").mkdir()
        shutil.copy(solution, subs / f"{i:02d}b_honest" / "ppo_math.ipynb")
    (subs / "canary.txt").write_text("keep me")
    csv = tmp_path / "out" / "scores.csv"
    assert main(["assignments", "grade", str(subs), "--build", str(build), "--out", str(csv), "--jobs", "1",
                 "--timeout", str(TIMEOUT_S), "--isolation", isolation, "--memory-mb", "2048"]) == 0
    return pd.read_csv(csv, keep_default_na=False).set_index("submission"), build


def _check_rows(scores: pd.DataFrame, cheats: dict[str, str]) -> None:
    for i, name in enumerate(cheats):
        cheat, honest = scores.loc[f"{i:02d}a_{name}/ppo_math.ipynb"], scores.loc[f"{i:02d}b_honest/ppo_math.ipynb"]
        assert cheat["score"] == 0.0, f"{name} earned points: {cheat.to_dict()}"
        assert [cheat[q] for q in POINTS] == [0.0] * 4, name
        assert (honest["score"], honest["error"]) == (12.0, ""), f"the submission after {name}: {honest.to_dict()}"
        assert [honest[q] for q in POINTS] == list(map(float, POINTS.values())), name


@pytest.mark.skipif(not namespace_available(), reason="the namespace mode needs root, unshare and setpriv")
def test_cheats_earn_nothing_and_poison_nothing_in_the_namespace_sandbox(tmp_path, checkout_copies):
    canary = Path(f"/tmp/rlhf-canary-{os.getpid()}")
    canary.write_text("keep me")
    checkout, copies = checkout_copies
    cheats = {"wrap_the_checker": WRAP_THE_CHECKER, "rewrite_the_tests": REWRITE_THE_TESTS,
              "fake_the_output": FAKE_THE_OUTPUT, "rewrite_the_bundle": REWRITE_THE_BUNDLE.format(names=POINTS),
              "loop_forever": LOOP_FOREVER, "setsid_child": SETSID_CHILD, "delete_outside": DELETE_OUTSIDE,
              "eat_memory": EAT_MEMORY, "read_the_masters": READ_THE_MASTERS.format(paths=copies, checkout=checkout)}
    try:
        scores, build = _grade(tmp_path, cheats, "namespace")
        assert canary.read_text() == "keep me", "a submission deleted a file outside its folder"
    finally:
        canary.unlink(missing_ok=True)
    _check_rows(scores, cheats)
    for i, name in enumerate(cheats):
        reported = scores.loc[f"{i:02d}a_{name}/ppo_math.ipynb", "student_id"]
        if name == "delete_outside":  # it may empty its own scratch tmpfs (its cwd's parent), nothing else
            assert all(p.startswith("deleted ../") for p in json.loads(reported)["found"]), reported
        elif name != "loop_forever":
            assert json.loads(reported)["found"] == [], f"{name} reached the grader's files: {reported}"
    assert "time limit" in scores.loc["04a_loop_forever/ppo_math.ipynb", "error"]
    assert json.loads(scores.loc["00a_wrap_the_checker/ppo_math.ipynb", "student_id"])["done"] == ["patched otter"]
    assert json.loads(scores.loc["07a_eat_memory/ppo_math.ipynb", "student_id"])["limit"] == 2048 * 2**20
    assert json.loads(scores.loc["08a_read_the_masters/ppo_math.ipynb", "student_id"]) == {"found": []}, \
        "copies of the masters in a checkout's build/lib outside /tmp are not in the sandbox's filesystem"
    manifest = load_manifest(build)
    bundle = build / manifest["ppo_math"]["autograder"]
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == manifest["ppo_math"]["sha256"]
    assert (tmp_path / "submissions" / "canary.txt").read_text() == "keep me"
    assert _sleepers() == [], "a process a submission started outlived its grading"


def test_process_mode_still_keeps_the_tests_out_of_the_students_process(tmp_path, checkout_copies):
    checkout, copies = checkout_copies
    cheats = {"wrap_the_checker": WRAP_THE_CHECKER, "fake_the_output": FAKE_THE_OUTPUT, "setsid_child": SETSID_CHILD,
              "read_the_masters": READ_THE_MASTERS.format(paths=copies, checkout=checkout)}
    scores, _ = _grade(tmp_path, cheats, "process")
    _check_rows(scores, cheats)
    found = json.loads(scores.loc["03a_read_the_masters/ppo_math.ipynb", "student_id"])["found"]
    assert set(copies) <= set(found), "in process mode the notebook reads what the grader can (the namespace test " \
        f"shows the same cheat finding nothing there): {found}"
    assert _sleepers() == [], "a setsid child outlived its grading (the grader is a child subreaper on Linux)"


def test_the_sandbox_filesystem_is_a_list_without_the_checkout_and_with_installed_masters_hidden(tmp_path):
    import rlhf_lab

    shown = [Path(p) for p in visible_paths()]
    package = Path(rlhf_lab.__file__).resolve().parent
    assert any(package.is_relative_to(p) for p in shown) and Path(sys.prefix).resolve() in shown
    assert not any((ROOT / "assignments").resolve().is_relative_to(p) for p in shown), "the checkout is not shown"
    assert not any((ROOT / "build").resolve().is_relative_to(p) for p in shown)
    installed = tmp_path / "lib" / "python3.11" / "site-packages" / "rlhf_lab" / "assignment_sources"
    installed.mkdir(parents=True)
    (tmp_path / "lib" / "python3.11" / "site-packages" / "other").mkdir()
    assert master_copies([str(tmp_path)]) == [str(installed.resolve())]
