"""`rlhf-lab assignments ...`: graded RLHF assignments, authored once as master notebooks and graded without Docker.

    rlhf-lab assignments list
    rlhf-lab assignments build [--source DIR] [--out dist/assignments]
    rlhf-lab assignments grade SUBMISSIONS_DIR [--build dist/assignments] --out scores.csv

A master notebook (one folder per assignment under `assignments/`, shipped as `rlhf_lab.assignment_sources`) is in
otter-grader's format: solutions between `# BEGIN SOLUTION` / `# END SOLUTION`, public and hidden tests per question,
points per question (see `assignments/README.md`, the instructor guide). `build` runs `otter assign` on each master
and writes, per assignment, a student folder (and zip) to hand out and an autograder folder holding the solutions,
every test and `autograder.zip`; `manifest.json` lists the assignments, their questions, their data files and the
SHA-256 of each bundle. `grade` (`rlhf_lab.teach.gradebook`) runs each submitted notebook in a sandbox and the tests in
the grader's own process (`rlhf_lab.teach.grading`). `add_assignment_commands(subparsers)` adds the command to
`rlhf-lab`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import tempfile
import urllib.parse
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import yaml
from nbformat.reader import NotJSONError

from rlhf_lab.core.files import SaveKind, atomic_directory, file_above, write_atomic
from rlhf_lab.teach.gradebook import MEMORY_MB, duplicate_lines, grade, limit_problem, roster_lines
from rlhf_lab.teach.grading import (AUTOGRADER_ZIP, DEFAULT_OUT, GRADE_TIMEOUT_S, GRADER_SECRET, MANIFEST,
                                   default_source, sha256_bytes)
from rlhf_lab.teach.isolation import MODES
from rlhf_lab.teach.otter_assign import run_otter_assign

__all__ = ["RUBRIC", "Question", "Assignment", "default_source", "RUBRIC_LINE", "parse_rubric",
           "read_master", "rubric_markdown", "find_masters", "COLAB_CELL", "check_colab_url",
           "build", "cmd_list", "cmd_build", "cmd_grade", "add_assignment_commands"]

RUBRIC = "rubric.md"
BUILD = SaveKind("autograder", "an assignment build", "build")  # out/NAME: replaced only if a build made it


@dataclass
class Question:
    """One question of a master notebook, as its `# BEGIN QUESTION` cell declares it."""

    name: str
    points: float
    manual: bool = False
    rubric: list[tuple[float, str]] = field(default_factory=list)  # hand-graded: (points, what earns them)


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
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # an assignment or question name: it names folders and files


def _config(cell, header: str, where: str) -> dict | None:
    """The YAML mapping under `header` in a raw cell such as `# BEGIN QUESTION`, or None if the cell is something
    else; `where` ("NOTEBOOK, cell N") starts the one-line ValueError for YAML that does not parse or is no mapping."""
    lines = cell.source.strip().splitlines()
    if cell.cell_type != "raw" or not lines or " ".join(lines[0].lower().split()) != header.lower():
        return None
    try:
        config = yaml.safe_load("\n".join(lines[1:]))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" on line {mark.line + 2} of the cell" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())[:160]
        raise ValueError(f"{where} ('{header}'): its YAML does not parse ({problem}{at}): write one 'key: value' per "
                         "line, e.g. 'name: q1' and 'points: 2'") from None
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{where} ('{header}'): its YAML is a {type(config).__name__}, not a mapping: write one "
                         "'key: value' per line, e.g. 'name: q1' and 'points: 2' (no leading '- ')")
    return config or {}


def _plain_name(config: dict, where: str, what: str) -> str:
    """The `name` of a config: a plain name (letters, digits, _ . -), as otter and the build use it in paths."""
    name = config.get("name")
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        found = "no 'name'" if name is None else f"name {name!r}"
        raise ValueError(f"{where}: {what} has {found}: give it 'name: ...' made of letters, digits, _ . and - "
                         "(it names files and folders), e.g. 'name: q1_loss'")
    return name


def _question(config: dict, where: str) -> Question:
    """A `# BEGIN QUESTION` config as a Question; a missing name or points that are not a number >= 0 are refused."""
    name = _plain_name(config, where, "the question")
    points = config.get("points", 1)
    try:
        value = float(points) if not isinstance(points, (bool, list, dict)) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: question {name} has 'points: {points}': give its total points as a number >= 0, "
                         "e.g. 'points: 2'")
    return Question(name, value, bool(config.get("manual")))


def _read_notebook(path: Path):
    """A master notebook as nbformat reads it; a file that is no notebook is one ValueError line saying so."""
    try:
        return nbformat.read(path, as_version=4)
    except UnicodeDecodeError:
        what = "is not a text file (not UTF-8)"
    except NotJSONError:
        what = "is not JSON"
    except OSError:  # a missing or unreadable file: its own message names it
        raise
    except Exception as err:  # nbformat's validation and conversion errors, or JSON of another shape
        what = f"is not a Jupyter notebook ({(str(err).strip().splitlines() or [type(err).__name__])[0][:160]})"
    raise ValueError(f"{path} {what}: restore the master notebook (e.g. from version control) or open it in "
                     "Jupyter and save it again") from None


RUBRIC_LINE = re.compile(r"^\s*[-*] \[(\d+(?:\.\d+)?)\]\s+(.+)$")


def parse_rubric(markdown: str) -> list[tuple[float, str]]:
    """The rubric lines of a model-answer cell, after its "**Rubric" line: `- [points] what earns them`."""
    _, found, rest = markdown.partition("**Rubric")
    if not found:
        return []
    return [(float(m[1]), m[2].strip()) for line in rest.splitlines() if (m := RUBRIC_LINE.match(line))]


def read_master(path: str | Path) -> Assignment:
    """Parse a master notebook's assignment name and questions (name, points, manual, rubric).

    A hand-graded question needs a rubric in its model answer whose points add up to the question's points."""
    path = Path(path)
    nb = _read_notebook(path)
    name, questions, cells = None, [], {}
    for number, cell in enumerate(nb.cells, 1):
        where = f"{path}, cell {number}"
        if (config := _config(cell, "# ASSIGNMENT CONFIG", where)) is not None:
            name = _plain_name(config, where, "the assignment config")
        elif (config := _config(cell, "# BEGIN QUESTION", where)) is not None:
            questions.append(_question(config, where))
            if questions[-1].name in cells:  # two questions of one name would share one column of the gradebook
                raise ValueError(f"{where}: question {questions[-1].name} is named twice (also cell "
                                 f"{cells[questions[-1].name]}): give each question its own name")
            cells[questions[-1].name] = number
        elif cell.cell_type == "markdown" and questions and questions[-1].manual and not questions[-1].rubric:
            questions[-1].rubric = parse_rubric(cell.source)
    if not name or not questions:
        raise ValueError(f"{path} is not a master notebook: it needs a raw '# ASSIGNMENT CONFIG' cell with a 'name' "
                         "and at least one raw '# BEGIN QUESTION' cell (see assignments/README.md)")
    for q in questions:
        if q.manual and sum(p for p, _ in q.rubric) != q.points:
            raise ValueError(f"{path}: hand-graded question {q.name} ({q.points:g} points) needs a rubric in its model "
                             "answer whose points add up to the question's: a '**Rubric**' line, then one "
                             f"'- [points] what earns them' line each (found {sum(p for p, _ in q.rubric):g} points)")
    return Assignment(name, path, questions)


def rubric_markdown(assignment: Assignment) -> str:
    """The rubrics of an assignment's hand-graded questions as one markdown page for the graders."""
    lines = [f"# Rubric: {assignment.name}", ""]
    for q in (q for q in assignment.questions if q.manual):
        lines += [f"## {q.name} ({q.points:g} points)", "", *[f"- [{p:g}] {text}" for p, text in q.rubric], ""]
    return "\n".join(lines)


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
COLAB_CELL = """\
# On Colab: install the grader and fetch this assignment's tests and data files. Elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    import subprocess, urllib.request, zipfile
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader"], check=True)
    urllib.request.urlretrieve({url}, "assignment_files.zip")
    zipfile.ZipFile("assignment_files.zip").extractall()"""


URL_REFUSED = re.compile(r"[\s\"'`\\\x00-\x1f\x7f-\x9f]")  # quotes, backslash, whitespace, control characters


def check_colab_url(url: str) -> None:
    """A ValueError (one line) unless `url` is an http(s) URL with a host and no quote, space or control character:
    it goes into code that every student runs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.netloc or URL_REFUSED.search(url):
        raise ValueError(f"--colab-url {url!r} is not an http(s) URL without quotes, spaces or control characters: "
                         "give the address where you will publish the student zips, e.g. https://example.org/rlhf")


def _add_colab_cell(notebook: Path, url: str) -> None:
    """Put a first cell in a student notebook that sets it up on Colab from the student zip at `url` (a checked URL,
    written into the code as a Python string literal)."""
    check_colab_url(url)
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(COLAB_CELL.format(url=repr(url))))
    nbformat.write(nb, notebook)


def build(source: str | Path | None = None, out: str | Path = DEFAULT_OUT, check: bool = True,
          colab_url: str | None = None, secret: str | None = None) -> dict:
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
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder: give the folder to write the build into, e.g. "
                         f"--out {DEFAULT_OUT}")
    if (above := file_above(out)) is not None:
        raise ValueError(f"--out {out}: cannot make the folder because {above} is a file, not a folder: give --out "
                         "a path in a folder")
    if colab_url is not None:
        check_colab_url(colab_url)
    secret = secret or secrets.token_hex(16)
    manifest = {}
    with contextlib.ExitStack() as built:  # every assignment built aside; all replace the old build only at the end
        for assignment in find_masters(source):
            target = built.enter_context(atomic_directory(out / assignment.name, kind=BUILD))
            manifest[assignment.name] = _build_one(assignment, target, secret, check, colab_url)
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2))  # grading checks each bundle's sha256 against it
    return manifest


def _build_one(assignment, target: Path, secret: str, check: bool, colab_url: str | None) -> dict:
    """Build one assignment's student and grader folders into `target`; returns its manifest entry."""
    target.rmdir()  # otter assign makes the folder itself
    with tempfile.TemporaryDirectory() as tmp:
        # otter assign works inside the master's folder: give it a copy, so an installed package stays untouched
        folder = Path(shutil.copytree(assignment.master.parent, Path(tmp) / "src"))
        run_otter_assign(folder / assignment.master.name, target, check, shown=assignment.master,
                         log=target.parent / f"{assignment.name}-otter.log")
    autograder = target / "autograder"
    (zip_path,) = [p for p in autograder.glob("*.zip")]
    zip_path.rename(autograder / AUTOGRADER_ZIP)
    with zipfile.ZipFile(autograder / AUTOGRADER_ZIP, "a") as zf:  # hidden tests that name grader_secret get it
        zf.writestr(GRADER_SECRET, secret)
    if assignment.manual_points:  # the rubric goes to the graders: beside the bundle and inside it
        (autograder / RUBRIC).write_text(rubric_markdown(assignment))
        with zipfile.ZipFile(autograder / AUTOGRADER_ZIP, "a") as zf:
            zf.writestr(RUBRIC, rubric_markdown(assignment))
    if colab_url:
        _add_colab_cell(target / "student" / assignment.master.name,
                        f"{colab_url.rstrip('/')}/{assignment.name}-student.zip")
    shutil.make_archive(str(target / f"{assignment.name}-student"), "zip", target / "student")
    student = target / "student"
    return {
        "master": assignment.master.name,
        "autograder": f"{assignment.name}/autograder/{AUTOGRADER_ZIP}",
        "sha256": sha256_bytes((autograder / AUTOGRADER_ZIP).read_bytes()),
        "files": sorted(p.relative_to(student).as_posix() for p in student.rglob("*") if p.is_file()
                        and p.suffix != ".ipynb" and p.relative_to(student).parts[0] != "tests"),
        "student": f"{assignment.name}/student",
        "questions": [asdict(q) for q in assignment.questions],
    }


# ---- command line ----------------------------------------------------------------------------------------------------
def cmd_list(args) -> None:
    for a in find_masters(args.source):
        manual = f" + {a.manual_points:g} by hand" if a.manual_points else ""
        print(f"{a.name:<20} {a.autograded_points:g} autograded points{manual}  ({a.master})")
        for q in a.questions:
            print(f"    {q.name:<28} {q.points:g}" + ("  (graded by hand)" if q.manual else ""))


def cmd_build(args) -> None:
    manifest = build(args.source, args.out, check=not args.no_check, colab_url=args.colab_url,
                     secret=os.environ.get("RLHF_LAB_GRADER_SECRET"))
    for name, spec in manifest.items():
        out = Path(args.out)
        print(f"{name:<20} hand out {out / spec['student']}  grade with {out / spec['autograder']}")
    print(f"manifest: {Path(args.out) / MANIFEST}")


def cmd_grade(args) -> None:
    table = grade(args.submissions, args.build, args.out, args.assignment, args.timeout, args.jobs, args.isolation,
                  args.memory_mb, force=args.force, roster=args.roster)
    graded = table[table["error"].fillna("") == ""] if "error" in table else table
    print(f"graded {len(graded)} of {len(table)} submissions -> {args.out}")
    for _, row in table.iterrows():
        status = row["error"] if row.get("error") else f"{row['score']:g}/{row['possible']:g}"
        shared = f"  (same student id as {row['same_id_as']})" if row.get("same_id_as") else ""
        print(f"  {row['submission']:<40} {status}{shared}")
    for line in duplicate_lines(table) + roster_lines(table):
        print(f"warning: {line}")
    print("files written:")
    for path in table.attrs.get("files", []):
        print(f"  {path}")


def _limit(name: str, convert):
    """An argparse type for grade()'s limit `name`: the text converted, else one error line "'TEXT' is not WHAT"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        problem = limit_problem(name, value, text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    return parse


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
    grd.add_argument("--out", default="scores.csv", help="CSV of scores to write (default scores.csv); beside it "
                     "OUT_lms.csv and feedback/ASSIGNMENT/*.md")
    grd.add_argument("--force", action="store_true",
                     help="replace the --out CSV, its _lms.csv and the feedback files when they exist (without it "
                          "grade refuses to start)")
    grd.add_argument("--assignment", default=None, help="grade every submission as this assignment")
    grd.add_argument("--roster", default=None,
                     help="CSV with a student_id column (as `rlhf-lab class create --roster` reads): ids not on "
                          "it are kept out of the LMS file, and who submitted nothing is listed")
    grd.add_argument("--timeout", type=_limit("timeout", float), default=GRADE_TIMEOUT_S,
                     help=f"seconds allowed per submission (default {GRADE_TIMEOUT_S})")
    grd.add_argument("--jobs", default=1, help="submissions graded at once (default 1)",
                     type=_limit("jobs", int))
    grd.add_argument("--isolation", default="auto", choices=MODES,
                     help="how each notebook is walled off (default auto: namespace when running as root with "
                          "unshare, else process; see assignments/README.md)")
    grd.add_argument("--memory-mb", default=MEMORY_MB,
                     type=_limit("memory_mb", int),
                     help=f"address space allowed to each notebook, in MB (default {MEMORY_MB}; 0: no limit)")
    grd.set_defaults(func=cmd_grade)

