"""Grade a folder of submissions into a score table, an LMS-ready CSV and one feedback file per student.

Each submission is graded by `rlhf_lab.teach.grading` in a child process (which runs the tests and talks to the
sandboxed notebook), `jobs` at a time, with a hard stop a minute after the time limit in case the child itself hangs.
The student id comes from the `student_id` variable of the submitted notebook.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pandas as pd

from rlhf_lab.core.files import file_above, write_atomic_all
from rlhf_lab.core.inputs import is_number, is_whole
from rlhf_lab.feedback.classroom import read_roster
from rlhf_lab.feedback.exchange import spreadsheet_safe_table
from rlhf_lab.teach.grading import DEFAULT_OUT, GRADE_TIMEOUT_S, load_manifest, master_folders
from rlhf_lab.teach.isolation import resolve_mode

__all__ = ["MEMORY_MB", "find_submissions", "submission_assignment", "grade_in_child", "score_row", "plain_test_name",
           "feedback_text", "id_key", "shared_ids", "duplicate_lines", "roster_ids", "mark_roster", "roster_lines",
           "lms_path", "check_outputs", "limit_problem", "grade"]

MEMORY_MB = 4096  # each notebook's address space: torch and a tiny model need about 1.5 GB
MAX_TIMEOUT_S = 86400  # a day per submission; far larger values overflow the waits on the sandbox
MAX_MEMORY_MB = 2**43 - 1  # the address-space limit is set in bytes, a 64-bit number
_LIMITS = {  # grade()'s limit -> (lowest, highest, what it is and what to give)
    "timeout": (0, MAX_TIMEOUT_S, "a time limit: give the seconds allowed per submission, a number above 0 and at "
                f"most {MAX_TIMEOUT_S} (default {GRADE_TIMEOUT_S})"),
    "jobs": (1, None, "a number of submissions to grade at once: give a whole number >= 1"),
    "memory_mb": (0, MAX_MEMORY_MB, "a memory limit: give the MB each notebook may use, a whole number from 0 (no "
                  f"limit) to {MAX_MEMORY_MB} (default {MEMORY_MB})")}


def limit_problem(name: str, value, text: str | None = None) -> str | None:
    """What is wrong with `value` for grade()'s limit `name` ("timeout", "jobs", "memory_mb"), in one line
    ("'TEXT' is not WHAT: give ...", TEXT the option as typed, else the value), or None when it is in range. A
    timeout is a number above 0 (NaN is not); the others are whole numbers (not bools)."""
    low, high, what = _LIMITS[name]
    if name == "timeout":
        fits = is_number(value) and low < value <= high
    else:
        fits = is_whole(value) and low <= value and (high is None or value <= high)
    return None if fits else f"{value if text is None else text!r} is not {what}"


def find_submissions(submissions_dir: str | Path) -> list[Path]:
    """Submitted notebooks (.ipynb) and export zips (.zip) under a folder, recursively, skipping hidden folders."""
    root = Path(submissions_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"submissions folder {root} is a file, not a folder: pass the folder where you collected the "
                         "students' notebooks or export zips (searched recursively)")
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


def grade_in_child(job: dict) -> dict:
    """`grading.grade_submission(job)` in a child process of its own session, killed a minute past the time limit."""
    with tempfile.TemporaryDirectory(prefix="rlhf-job-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps({**job, "hide": [*job.get("hide", []), tmp]}))
        env = dict(os.environ, **({"OMP_NUM_THREADS": str(job["threads"])} if job.get("threads") else {}))
        proc = subprocess.Popen([sys.executable, "-m", "rlhf_lab.teach.grading", str(job_path), str(result_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=job["timeout"] + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"error": f"grading took longer than {job['timeout']:.0f} s; raise --timeout if needed"}
        if proc.returncode != 0 or not result_path.is_file():
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit status {proc.returncode}"
            return {"error": f"the grader crashed: {last}"}
        return json.loads(result_path.read_text())


def score_row(row: dict, spec: dict, result: dict) -> dict:
    """Fill a CSV row from one grading result: question scores, totals, failing tests by name, error."""
    questions, failed = result.get("questions", {}), []
    for q in spec["questions"]:
        graded = questions.get(q["name"])
        row[q["name"]] = None if q["manual"] else (graded["score"] if graded else 0.0)
        failed += [case["name"] + (" (hidden)" if case["hidden"] else "") for case in (graded or {}).get("failed", [])]
    auto = [q for q in spec["questions"] if not q["manual"]]
    return {**row, "student_id": result.get("student_id") or "", "score": sum(row[q["name"]] for q in auto),
            "possible": sum(q["points"] for q in auto),
            "manual_possible": sum(q["points"] for q in spec["questions"] if q["manual"]),
            "failed_tests": "; ".join(failed), "error": result.get("error", ""), "seconds": result.get("seconds")}


def plain_test_name(name: str) -> str:
    """"q3_gae/test_gae_matches_a_loop" -> "gae matches a loop": what a student reads in their feedback."""
    return name.split("/")[-1].removeprefix("test_").replace("_", " ")


def feedback_text(row: dict, spec: dict, result: dict) -> str:
    """A student's feedback: points per question, and each failing test by plain name (public ones with their
    message, hidden ones by name only, so the hidden checks stay unknown)."""
    lines = [f"# {row['assignment']}: {row.get('student_id') or row['submission']}", "",
             f"Autograded: {row['score']:g} of {row['possible']:g} points."]
    if row.get("manual_possible"):
        lines.append(f"Graded by hand: {row['manual_possible']:g} more points, added by your instructor.")
    if row.get("error"):
        lines.append(f"Grading problem: {row['error']}")
    lines.append("")
    for q in spec["questions"]:
        if q["manual"]:
            lines.append(f"- {q['name']}: graded by hand (out of {q['points']:g})")
            continue
        lines.append(f"- {q['name']}: {row[q['name']]:g} of {q['points']:g}")
        for case in result.get("questions", {}).get(q["name"], {}).get("failed", []):
            note = "hidden test" if case["hidden"] else case["message"]
            lines.append(f"    - failed: {plain_test_name(case['name'])} ({note})")
    return "\n".join(lines) + "\n"


def _safe_name(text: str) -> str:
    """A file name from a student id or path: safe characters only, at most 80 of them (an id is typed by the
    student: it may be anything, also a long string)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")[:80] or "submission"


def id_key(student_id) -> str:
    """A student id as submissions and rosters are compared: stripped and case-folded ("S123 " is "s123"); a
    missing id (not text) is ""."""
    return student_id.strip().casefold() if isinstance(student_id, str) else ""


def shared_ids(table: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """(student id, assignment) -> the submissions that carry it, for every id that two or more submissions of one
    assignment share. Ids are compared stripped and case-folded ("S123 " is "s123", shown as the first one typed);
    missing ids are no one's."""
    groups: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for _, row in table.iterrows():
        student_id = row.get("student_id")
        if id_key(student_id):
            key = (id_key(student_id), str(row.get("assignment")))
            groups.setdefault(key, (student_id.strip(), []))[1].append(row["submission"])
    return {(shown, assignment): subs for (_, assignment), (shown, subs) in groups.items() if len(subs) > 1}


def duplicate_lines(table: pd.DataFrame) -> list[str]:
    """One line per student id that several submissions of one assignment share: what the instructor must decide."""
    return [f"student id {student_id!r} is in {len(subs)} {assignment} submissions ({', '.join(subs)}): none of them "
            "is in the LMS file; decide which counts (column same_id_as of the score table)"
            for (student_id, assignment), subs in shared_ids(table).items()]


def roster_ids(roster) -> list[str]:
    """The student ids of a roster: a CSV with a student_id column (the one `rlhf-lab class create --roster` reads)
    or a list of ids. A missing file, a CSV without the column or an empty roster is refused in one line (ValueError)."""
    ids = [student_id for student_id, _ in read_roster(roster) if student_id]
    if not ids:
        raise ValueError(f"the roster {roster if isinstance(roster, (str, Path)) else ''} lists no student ids: give "
                         "a CSV with a student_id column, one student per row")
    return ids


def mark_roster(table: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    """`table` with an `on_roster` column (each submission's student id is one of `ids`, compared stripped and
    case-folded; a missing id is not) and, in `table.attrs["missing"]`, assignment -> the roster's ids that no
    submission of that graded assignment carries."""
    known = {id_key(s): s for s in ids}
    table = table.assign(on_roster=[id_key(s) in known and id_key(s) != "" for s in table.get("student_id", [])])
    graded = table[table["error"].fillna("") == ""] if "error" in table else table
    missing = {}
    for assignment, rows in graded.groupby("assignment", sort=True):
        seen = {id_key(s) for s in rows["student_id"]}
        missing[assignment] = [known[k] for k in known if k not in seen]
    table.attrs["missing"] = missing
    return table


def roster_lines(table: pd.DataFrame) -> list[str]:
    """What a roster check found (`mark_roster`): one line per submission whose id is not on the roster (kept out of
    the LMS file), and one per assignment with students who submitted nothing that graded."""
    if "on_roster" not in table:
        return []
    lines = [f"{row['submission']}: student id {row['student_id'] or '(none)'!r} is not on the roster: it is not in "
             "the LMS file; match it to a student by hand (column on_roster of the score table)"
             for _, row in table[~table["on_roster"]].iterrows()]
    for assignment, ids in table.attrs.get("missing", {}).items():
        if ids:
            lines.append(f"{len(ids)} student(s) on the roster have no graded {assignment} submission: "
                         f"{', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''}")
    return lines


def lms_path(out: str | Path) -> Path:
    """The LMS-ready CSV written beside the score table `out`: scores.csv -> scores_lms.csv."""
    out = Path(out)
    return out.with_name(out.stem + "_lms.csv")


def check_outputs(out: str | Path, assignments, force: bool = False) -> None:
    """Refuse, before any grading, a score table `out` that cannot be written (a folder, a path under a file) or whose
    files exist without `force`: `out`, its `_lms.csv` and feedback files of `assignments` (an instructor's grades
    entered by hand may be in them). One-line ValueError or FileExistsError."""
    out = Path(out)
    feedback = [out.parent / "feedback" / name / "x.md" for name in sorted(assignments)]
    for path in (out, lms_path(out), *feedback):
        if (above := file_above(path)) is not None:
            fix = "give --out a path in a folder" if path in (out, lms_path(out)) else \
                f"move {above} away or give --out in another folder"
            raise ValueError(f"--out {out}: cannot write in {path.parent}/ because {above} is a file, not a folder: "
                             f"{fix}")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give the CSV file to write the scores to, e.g. "
                         f"--out {out / 'scores.csv'}")
    if lms_path(out).is_dir():
        raise ValueError(f"--out {out}: {lms_path(out)} (the LMS file) is a folder: move it away or give another --out")
    existing = [str(path) for path in (out, lms_path(out)) if path.exists()]
    existing += [f"{path.parent}/*.md" for path in feedback if any(path.parent.glob("*.md"))]
    if existing and not force:
        one = len(existing) == 1
        raise FileExistsError(f"{' and '.join(existing)} already exist{'s' if one else ''}: pass --force to replace "
                              f"{'it' if one else 'them'} (grades entered there by hand would be lost), or give "
                              "another --out")


def grade(submissions_dir: str | Path, build_dir: str | Path = DEFAULT_OUT, out: str | Path | None = None,
          assignment: str | None = None, timeout: float = GRADE_TIMEOUT_S, jobs: int = 1,
          isolation: str = "auto", memory_mb: int = MEMORY_MB, force: bool = False, roster=None) -> pd.DataFrame:
    """Grade every submission under `submissions_dir` against the bundles in `build_dir`; one row per submission.

    Columns: submission (path under the folder), student_id, assignment, score and possible (autograded points),
    manual_possible, one per question (hand-graded ones left empty), failed_tests ("question/test_function", hidden
    ones marked), error, same_id_as (the other submissions of this assignment that carry the same student id),
    seconds. With `out`, writes it as CSV, an LMS-ready `<out>_lms.csv` (student_id, assignment, points per question,
    total) and `<out folder>/feedback/<assignment>/<student id>.md` per submission. A student id that several
    submissions of one assignment carry gets no row in the LMS file: the instructor decides which one counts.
    Before grading, an `out` that exists (or its LMS file, or feedback files of an assignment being graded) is
    refused unless `force` (`check_outputs`); the files written are listed in `table.attrs["files"]`.
    `isolation` is "auto", "namespace" or "process" (`rlhf_lab.teach.isolation`); `memory_mb` caps each notebook's
    address space (0: no cap). With a `roster` (a CSV with a student_id column, or a list of ids), a column
    `on_roster` says whose id is on it; a submission whose id is not is kept out of the LMS file (a typo would be
    filed under no one, or a classmate), and `table.attrs["missing"]` lists who submitted nothing (`roster_lines`).
    """
    for name, value in (("timeout", timeout), ("jobs", jobs), ("memory_mb", memory_mb)):
        problem = limit_problem(name, value)
        if problem:
            raise ValueError(f"{name}: {problem}")
    ids = None if roster is None else roster_ids(roster)  # before grading, as every check on what was given
    manifest = load_manifest(build_dir)
    if assignment is not None and assignment not in manifest:
        raise ValueError(f"unknown assignment {assignment!r}; the build has {', '.join(manifest)}")
    mode = resolve_mode(isolation)
    stale = [name for name, spec in manifest.items() if "sha256" not in spec]
    if stale:
        raise ValueError(f"{MANIFEST_HINT} ({', '.join(stale)} has no bundle hash)")
    root, build_dir = Path(submissions_dir), Path(build_dir)
    rows, work = [], []
    for path in find_submissions(root):
        name = assignment or submission_assignment(path)
        rows.append({"submission": path.relative_to(root).as_posix(), "assignment": name})
        if name in manifest:
            work.append((len(rows) - 1, path, manifest[name]))
        else:
            rows[-1]["error"] = (f"cannot tell which assignment this is ({name!r}); pass --assignment NAME "
                                 f"(one of {', '.join(manifest)})")
    if out is not None:  # before grading: an hour of grading must not end in a file that cannot be written
        check_outputs(out, {rows[i]["assignment"] for i, _, _ in work}, force)
    threads = 1 if jobs > 1 else None
    # the masters hold solutions and hidden tests: an installed rlhf-lab ships them, so hide them too
    hide = [str(root.resolve()), str(build_dir.resolve()), *master_folders()]

    def job(w):
        _, path, spec = w
        bundle = str((build_dir / spec["autograder"]).resolve())
        return grade_in_child({"submission": str(path.resolve()), "bundle": bundle, "sha256": spec["sha256"],
                               "files": spec.get("files", []), "mode": mode, "timeout": timeout, "threads": threads,
                               "memory_mb": memory_mb,
                               "hide": hide})

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for (i, _, spec), result in zip(work, pool.map(job, work)):
            rows[i], results[i] = score_row(rows[i], spec, result), result
    graded = {row["assignment"] for row in rows}  # the question columns of the assignments submitted, not every one
    questions = [q["name"] for name, spec in manifest.items() if name in graded for q in spec["questions"]]
    columns = ["submission", "student_id", "assignment", "score", "possible", "manual_possible",
               *dict.fromkeys(questions), "failed_tests", "error", "same_id_as", "on_roster", "seconds"]
    table = pd.DataFrame(rows)
    table["same_id_as"] = ""
    for subs in shared_ids(table).values():
        for sub in subs:
            table.loc[table["submission"] == sub, "same_id_as"] = "; ".join(s for s in subs if s != sub)
    if ids is not None:
        table = mark_roster(table, ids)
    table = table.reindex(columns=[c for c in columns if c in table.columns])
    if out is not None:
        out = Path(out)  # all written before any replaces an old one: a crash or a full disk keeps the old gradebook
        unique = table[table["same_id_as"] == ""]  # a shared id: the instructor decides which submission counts
        if "on_roster" in table:  # an id not on the roster: filed by hand
            unique = unique[unique["on_roster"]]
        lms = unique.reindex(columns=["student_id", "assignment", *dict.fromkeys(questions)]).copy()
        lms["total"] = unique.get("score")
        written = {lms_path(out): spreadsheet_safe_table(lms).to_csv(index=False)}
        for i, result in results.items():
            row, spec = rows[i], manifest[rows[i]["assignment"]]
            folder = out.parent / "feedback" / row["assignment"]
            stem = _safe_name(row.get("student_id") or row["submission"])
            target = folder / f"{stem}.md"
            taken = {str(path).casefold() for path in written}  # s1.md and S1.md: one file on macOS and Windows
            if str(target).casefold() in taken:  # two submissions with one id: keep both, named by file
                target = folder / f"{stem}__{_safe_name(row['submission'])}.md"
            written[target] = feedback_text(row, spec, result)
        written[out] = spreadsheet_safe_table(table).to_csv(index=False)  # the scores last: the gradebook whole
        write_atomic_all(written)
        table.attrs["files"] = [str(out), *(str(path) for path in written if path != out)]
    return table


MANIFEST_HINT = "this build predates bundle hashes: rebuild it with `rlhf-lab assignments build` and grade again"
