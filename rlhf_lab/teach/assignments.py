"""`rlhf-lab assignments ...`: graded RLHF assignments, authored once as master notebooks and graded without Docker.

    rlhf-lab assignments list
    rlhf-lab assignments build [--source DIR] [--out dist/assignments]
    rlhf-lab assignments grade SUBMISSIONS_DIR [--build dist/assignments] --out scores.csv

A master notebook (one folder per assignment under `assignments/`, shipped as `rlhf_lab.assignment_sources`) is in
otter-grader's format: solutions between `# BEGIN SOLUTION` / `# END SOLUTION`, public and hidden tests per question,
points per question (see `assignments/README.md`, the instructor guide). `build` runs `otter assign` on each master
and writes, per assignment, a student folder (and zip) to hand out and an autograder folder holding the solutions,
every test and `autograder.zip`; `manifest.json` lists the assignments and their questions. `grade` runs each
submitted notebook (or the zip of its export cell) with otter's non-containerised runner in a child process with a
time limit, and writes one CSV row per submission: the score of every question, the totals, the failing tests by name,
and an empty column per hand-graded question. `add_assignment_commands(subparsers)` adds the command to `rlhf-lab`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.resources
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import pandas as pd
import yaml

__all__ = ["DEFAULT_OUT", "MANIFEST", "AUTOGRADER_ZIP", "GRADE_TIMEOUT_S", "OTTER_HINT", "Question", "Assignment",
           "default_source", "read_master", "find_masters", "COLAB_CELL", "build", "load_manifest",
           "find_submissions", "submission_assignment", "case_names", "grade_one", "grade", "cmd_list", "cmd_build",
           "cmd_grade", "add_assignment_commands"]

DEFAULT_OUT = "dist/assignments"
MANIFEST = "manifest.json"
AUTOGRADER_ZIP = "autograder.zip"
GRADE_TIMEOUT_S = 300
OTTER_HINT = "the instructor tools need otter-grader: pip install 'rlhf-lab[instructor]' (or pip install otter-grader)"


@dataclass
class Question:
    """One question of a master notebook, as its `# BEGIN QUESTION` cell declares it."""

    name: str
    points: float
    manual: bool = False


@dataclass
class Assignment:
    """A master notebook: its otter assignment name, its file and its questions in order."""

    name: str
    master: Path
    questions: list[Question] = field(default_factory=list)

    @property
    def autograded_points(self) -> float:
        """Points of the questions the grader scores."""
        return sum(q.points for q in self.questions if not q.manual)

    @property
    def manual_points(self) -> float:
        """Points of the questions graded by hand."""
        return sum(q.points for q in self.questions if q.manual)


# ---- reading master notebooks -------------------------------------------------------------------------------------
def default_source() -> Path:
    """The master notebooks shipped with the package (the repository's `assignments/` folder)."""
    return Path(str(importlib.resources.files("rlhf_lab.assignment_sources")))


def _config(cell, header: str) -> dict | None:
    """The YAML under `header` in a raw cell such as `# BEGIN QUESTION`, or None if the cell is something else."""
    lines = cell.source.strip().splitlines()
    if cell.cell_type != "raw" or not lines or " ".join(lines[0].lower().split()) != header.lower():
        return None
    return yaml.safe_load("\n".join(lines[1:])) or {}


def read_master(path: str | Path) -> Assignment:
    """Parse a master notebook's assignment name and questions (name, points, manual)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    name, questions = None, []
    for cell in nb.cells:
        if (config := _config(cell, "# ASSIGNMENT CONFIG")) is not None:
            name = config.get("name")
        elif (config := _config(cell, "# BEGIN QUESTION")) is not None:
            questions.append(Question(config["name"], float(config.get("points", 1)), bool(config.get("manual"))))
    if not name or not questions:
        raise ValueError(f"{path} is not a master notebook: it needs a raw '# ASSIGNMENT CONFIG' cell with a 'name' "
                         "and at least one raw '# BEGIN QUESTION' cell (see assignments/README.md)")
    return Assignment(name, path, questions)


def find_masters(source: str | Path | None = None) -> list[Assignment]:
    """The master notebooks under `source` (default: the shipped ones), one per subfolder, in folder order."""
    source = Path(source) if source is not None else default_source()
    if not source.is_dir():
        raise FileNotFoundError(f"no assignment sources at {source}: pass --source DIR, a folder with one subfolder "
                                "per assignment, each holding one master notebook")
    masters = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        notebooks = sorted(folder.glob("*.ipynb"))
        if len(notebooks) != 1:
            raise ValueError(f"{folder} holds {len(notebooks)} notebooks; keep exactly one master notebook per folder")
        masters.append(read_master(notebooks[0]))
    if not masters:
        raise ValueError(f"no master notebooks under {source}: put each one in its own subfolder")
    return masters


# ---- build -----------------------------------------------------------------------------------------------------------
def _otter_assign(master: Path, result: Path, check: bool) -> None:
    """Run `otter assign` quietly; on failure re-raise with what otter printed."""
    try:
        from otter.assign import main as otter_assign
    except ImportError as err:
        raise ModuleNotFoundError(OTTER_HINT) from err
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            otter_assign(str(master), str(result), no_pdfs=True, no_run_tests=not check)
    except Exception as err:
        raise ValueError(f"otter assign failed on {master}: {err}\n{log.getvalue()[-2000:]}") from err


COLAB_CELL = """\
# On Colab: install the grader and fetch this assignment's tests and data files. Elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess, urllib.request, zipfile
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader"], check=True)
    urllib.request.urlretrieve("{url}", "assignment_files.zip")
    zipfile.ZipFile("assignment_files.zip").extractall()"""


def _add_colab_cell(notebook: Path, url: str) -> None:
    """Put a first cell in a student notebook that sets it up on Colab from the student zip at `url`."""
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB_CELL.format(url=url)))
    nbformat.write(nb, notebook)


def build(source: str | Path | None = None, out: str | Path = DEFAULT_OUT, check: bool = True,
          colab_url: str | None = None) -> dict:
    """Build the student version and the grader bundle of every master under `source` into `out`; return the manifest.

    out/NAME/student/         the notebook without solutions, public tests only, data files: hand this out
    out/NAME/NAME-student.zip the same folder zipped (for an LMS, a JupyterHub share or Colab)
    out/NAME/autograder/      solutions notebook, all tests and autograder.zip: keep this away from students
    out/manifest.json         assignments, their questions and points (read by `grade`)
    With check=True, otter runs every test against the solutions and the build fails if one does not pass.
    With colab_url (where you will publish the student zips, e.g. https://example.org/rlhf), each student notebook
    starts with a cell that, on Colab only, installs otter-grader and fetches COLAB_URL/NAME-student.zip.
    """
    out = Path(out)
    manifest = {}
    for assignment in find_masters(source):
        target = out / assignment.name
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory() as tmp:
            # otter assign works inside the master's folder: give it a copy, so an installed package stays untouched
            folder = Path(shutil.copytree(assignment.master.parent, Path(tmp) / "src"))
            _otter_assign(folder / assignment.master.name, target, check)
        autograder = target / "autograder"
        (zip_path,) = [p for p in autograder.glob("*.zip")]
        zip_path.rename(autograder / AUTOGRADER_ZIP)
        if colab_url:
            _add_colab_cell(target / "student" / assignment.master.name,
                            f"{colab_url.rstrip('/')}/{assignment.name}-student.zip")
        shutil.make_archive(str(target / f"{assignment.name}-student"), "zip", target / "student")
        manifest[assignment.name] = {
            "master": assignment.master.name,
            "autograder": f"{assignment.name}/autograder/{AUTOGRADER_ZIP}",
            "student": f"{assignment.name}/student",
            "questions": [asdict(q) for q in assignment.questions],
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


# ---- grade -----------------------------------------------------------------------------------------------------------
def load_manifest(build_dir: str | Path) -> dict:
    """The manifest that `build` wrote: assignment name -> autograder path, student folder, questions."""
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {build_dir}: run `rlhf-lab assignments build --out {build_dir}` "
                                "first, or pass --build with the folder that build wrote")
    return json.loads(path.read_text())


def find_submissions(submissions_dir: str | Path) -> list[Path]:
    """Submitted notebooks (.ipynb) and export zips (.zip) under a folder, recursively, skipping hidden folders."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"submissions folder {root} does not exist: pass the folder where you collected the "
                                "students' notebooks or export zips")
    found = sorted(p for p in root.rglob("*") if p.suffix in (".ipynb", ".zip") and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise ValueError(f"no notebooks (.ipynb) or export zips (.zip) under {root}: students hand in the notebook or "
                         "the zip that the last cell of the assignment makes")
    return found


def submission_assignment(path: Path) -> str | None:
    """The otter assignment name stored in a submitted notebook's metadata (in a zip: its notebook's), or None."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith(".ipynb") and "/." not in "/" + n]
                if len(names) != 1:
                    return None
                nb = nbformat.reads(zf.read(names[0]).decode("utf-8"), as_version=4)
        else:
            nb = nbformat.read(path, as_version=4)
    except Exception:  # a student's file may be anything: unreadable means unknown
        return None
    return nb.metadata.get("otter", {}).get("assignment_name")


def case_names(autograder_zip: str | Path) -> dict[str, str]:
    """otter's test-case ids ("q3_gae - 2") -> "q3_gae/<test function name>", read from the grader's test files."""
    names = {}
    with zipfile.ZipFile(autograder_zip) as zf:
        for member in zf.namelist():
            if not (member.startswith("tests/") and member.endswith(".py")):
                continue
            question = Path(member).stem
            functions = [node.name for node in ast.parse(zf.read(member)).body
                         if isinstance(node, ast.FunctionDef) and node.decorator_list]
            names.update({f"{question} - {i}": f"{question}/{fn}" for i, fn in enumerate(functions, 1)})
    return names


def grade_one(submission: str, autograder_zip: str) -> dict:
    """Grade one submission in this process with otter's non-containerised runner; a JSON-ready dict."""
    from otter.api import grade_submission

    results = grade_submission(submission, autograder_zip, quiet=True)
    if results.catastrophic_error is not None:
        return {"error": f"{type(results.catastrophic_error).__name__}: {results.catastrophic_error}"}
    return {"questions": {
        name: {"score": float(tf.score), "possible": float(tf.possible),
               "failed": [{"id": r.test_case.name, "hidden": r.test_case.hidden} for r in tf.test_case_results
                          if not r.passed]}
        for name, tf in results.results.items()}}


def _grade_in_child(submission: Path, autograder_zip: Path, timeout: float, threads: int | None) -> dict:
    """`grade_one` in a child process (its own session, so a timeout also ends the notebook's kernel)."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        code = ("import json, sys; from rlhf_lab.teach.assignments import grade_one; "
                "json.dump(grade_one(sys.argv[1], sys.argv[2]), open(sys.argv[3], 'w'))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(submission), str(autograder_zip), str(result_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        start = time.perf_counter()
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"error": f"grading took longer than {timeout:.0f} s (an endless loop?); raise --timeout if needed"}
        seconds = round(time.perf_counter() - start, 1)
        if proc.returncode != 0 or not result_path.is_file():
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {proc.returncode}"
            return {"error": f"the grader crashed: {last}", "seconds": seconds}
        return {**json.loads(result_path.read_text()), "seconds": seconds}


def _score_row(row: dict, spec: dict, result: dict, ids: dict[str, str]) -> dict:
    """Fill a CSV row from one grading result: question scores, totals, failing tests by name, error."""
    questions, failed = result.get("questions", {}), []
    for q in spec["questions"]:
        graded = questions.get(q["name"])
        row[q["name"]] = None if q["manual"] else (graded["score"] if graded else 0.0)
        for case in (graded or {}).get("failed", []):
            failed.append(ids.get(case["id"], case["id"]) + (" (hidden)" if case["hidden"] else ""))
    auto = [q for q in spec["questions"] if not q["manual"]]
    return {**row, "score": sum(row[q["name"]] for q in auto), "possible": sum(q["points"] for q in auto),
            "manual_possible": sum(q["points"] for q in spec["questions"] if q["manual"]),
            "failed_tests": "; ".join(failed), "error": result.get("error", ""), "seconds": result.get("seconds")}


def grade(submissions_dir: str | Path, build_dir: str | Path = DEFAULT_OUT, out: str | Path | None = None,
          assignment: str | None = None, timeout: float = GRADE_TIMEOUT_S, jobs: int = 1) -> pd.DataFrame:
    """Grade every submission under `submissions_dir` against the bundles in `build_dir`; one row per submission.

    Columns: submission (path under the folder), assignment, one per question (hand-graded ones left empty), score
    and possible (autograded points), manual_possible, failed_tests ("question/test_function", hidden ones marked),
    error, seconds. `assignment` forces the assignment for notebooks whose metadata lost it; `jobs` submissions are
    graded at once (each with one CPU thread when jobs > 1). Writes `out` as CSV when given.
    """
    manifest = load_manifest(build_dir)
    if assignment is not None and assignment not in manifest:
        raise ValueError(f"unknown assignment {assignment!r}; the build has {', '.join(manifest)}")
    root = Path(submissions_dir)
    rows, work = [], []
    for path in find_submissions(root):
        name = assignment or submission_assignment(path)
        rows.append({"submission": path.relative_to(root).as_posix(), "assignment": name})
        if name in manifest:
            work.append((len(rows) - 1, path, manifest[name]))
        else:
            rows[-1]["error"] = (f"cannot tell which assignment this is ({name!r}); pass --assignment NAME "
                                 f"(one of {', '.join(manifest)})")
    threads = 1 if jobs > 1 else None
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = pool.map(lambda w: _grade_in_child(w[1], Path(build_dir) / w[2]["autograder"], timeout, threads),
                           work)
        for (i, _, spec), result in zip(work, results):
            rows[i] = _score_row(rows[i], spec, result, case_names(Path(build_dir) / spec["autograder"]))
    questions = [q["name"] for spec in manifest.values() for q in spec["questions"]]
    columns = ["submission", "assignment", "score", "possible", "manual_possible", *dict.fromkeys(questions),
               "failed_tests", "error", "seconds"]
    table = pd.DataFrame(rows)
    table = table.reindex(columns=[c for c in columns if c in table.columns])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    return table


# ---- command line ----------------------------------------------------------------------------------------------------
def cmd_list(args) -> None:
    for a in find_masters(args.source):
        manual = f" + {a.manual_points:g} by hand" if a.manual_points else ""
        print(f"{a.name:<20} {a.autograded_points:g} autograded points{manual}  ({a.master})")
        for q in a.questions:
            print(f"    {q.name:<28} {q.points:g}" + ("  (graded by hand)" if q.manual else ""))


def cmd_build(args) -> None:
    manifest = build(args.source, args.out, check=not args.no_check, colab_url=args.colab_url)
    for name, spec in manifest.items():
        print(f"{name:<20} hand out {Path(args.out) / spec['student']}  grade with {Path(args.out) / spec['autograder']}")
    print(f"manifest: {Path(args.out) / MANIFEST}")


def cmd_grade(args) -> None:
    table = grade(args.submissions, args.build, args.out, args.assignment, args.timeout, args.jobs)
    graded = table[table["error"].fillna("") == ""] if "error" in table else table
    print(f"graded {len(graded)} of {len(table)} submissions -> {args.out}")
    for _, row in table.iterrows():
        status = row["error"] if row.get("error") else f"{row['score']:g}/{row['possible']:g}"
        print(f"  {row['submission']:<40} {status}")


def add_assignment_commands(subparsers) -> None:
    """Add `assignments {list,build,grade}` to the `rlhf-lab` parser."""
    parser = subparsers.add_parser("assignments", help="build graded assignments and grade submissions (otter-grader)")
    sub = parser.add_subparsers(dest="assignments_command", required=True)
    source_help = "folder of master notebooks, one subfolder each (default: the ones shipped with rlhf-lab)"

    lst = sub.add_parser("list", help="list the assignments, their questions and points")
    lst.add_argument("--source", default=None, help=source_help)
    lst.set_defaults(func=cmd_list)

    bld = sub.add_parser("build", help="write the student versions and the grader bundles")
    bld.add_argument("--source", default=None, help=source_help)
    bld.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    bld.add_argument("--no-check", action="store_true", help="skip running the tests against the solutions")
    bld.add_argument("--colab-url", default=None,
                     help="URL where you will publish the student zips; adds a Colab setup cell to each notebook")
    bld.set_defaults(func=cmd_build)

    grd = sub.add_parser("grade", help="grade a folder of submitted notebooks (or export zips) into a CSV")
    grd.add_argument("submissions", help="folder of submissions (searched recursively)")
    grd.add_argument("--build", default=DEFAULT_OUT, help=f"folder written by `build` (default {DEFAULT_OUT})")
    grd.add_argument("--out", default="scores.csv", help="CSV of scores to write (default scores.csv)")
    grd.add_argument("--assignment", default=None, help="grade every submission as this assignment")
    grd.add_argument("--timeout", type=float, default=GRADE_TIMEOUT_S, help="seconds allowed per submission")
    grd.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    grd.set_defaults(func=cmd_grade)

