"""The grader side of one submission: verify the bundle, start the sandbox, run every test here against its answers.

    python -m rlhf_lab.teach.grading JOB.json RESULT.json      (started by `rlhf_lab.teach.gradebook`)

The tests never enter the student's process. This process reads the grader bundle (`autograder.zip`), checks its
SHA-256 against the hash that `build` recorded, unpacks a fresh copy into a private folder (its working folder, so
tests that read the data files find them), and starts `rlhf_lab.teach.sandbox` with the submitted notebook's cells
and the assignment's data files (isolated as `rlhf_lab.teach.isolation` says). Each test function then runs here;
its parameters, looked up by name in the student's notebook as otter does, are fetched over the JSON pipe: data
arrives as values, functions and models as `Remote` proxies whose calls run in the sandbox. A test may hand the
notebook a function of its own wrapped in `wire.Callback`: the notebook's calls of it come back as `ask`s, answered
here with data while the test's call waits (`SandboxLink.answer_ask`); any other request is refused and noted on
every callback handed out, so a test can void what it measured. Scores follow otter's
rules (points per test case, `all_or_nothing`). A time limit covers the notebook and every call; past it the sandbox
is killed and the remaining tests fail.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from rlhf_lab.teach.isolation import become_subreaper, kill_children, sandbox_command, sandbox_env
from rlhf_lab.teach.testfiles import load_test_file, run_test_file
from rlhf_lab.teach.wire import LineReader, WireError, decode, encode, send

__all__ = ["DEFAULT_OUT", "MANIFEST", "AUTOGRADER_ZIP", "GRADE_TIMEOUT_S", "GRADER_SECRET", "default_source",
           "master_folders", "sha256_bytes", "load_manifest", "read_cells", "SandboxLink", "answer_value", "Remote",
           "NotebookValues", "run_tests", "extract_data_files", "grade_submission", "main"]

DEFAULT_OUT = "dist/assignments"
MANIFEST = "manifest.json"
AUTOGRADER_ZIP = "autograder.zip"
GRADE_TIMEOUT_S = 300
GRADER_SECRET = "grader_secret.txt"  # in the bundle only; tests that name `grader_secret` receive it


def default_source() -> Path:
    """The master notebooks shipped with the package (the repository's `assignments/` folder).

    In a source checkout the `assignments/` folder beside `rlhf_lab/` wins, so a second checkout (a git worktree)
    on PYTHONPATH builds its own masters rather than those of the checkout an editable install points at."""
    import rlhf_lab

    beside = Path(rlhf_lab.__file__).resolve().parent.parent / "assignments"
    if (beside / "__init__.py").is_file() and (beside / "README.md").is_file():
        return beside
    return Path(str(importlib.resources.files("rlhf_lab.assignment_sources")))


def master_folders() -> list[str]:
    """Every folder of master notebooks this Python can see (they hold solutions and hidden tests)."""
    found = {str(default_source().resolve())}
    try:
        found.add(str(Path(str(importlib.resources.files("rlhf_lab.assignment_sources"))).resolve()))
    except ModuleNotFoundError:
        pass
    return sorted(found)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_manifest(build_dir: str | Path) -> dict:
    """The manifest that `build` wrote: assignment name -> bundle path and hash, student folder, questions."""
    path = Path(build_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {build_dir}: run `rlhf-lab assignments build --out {build_dir}` "
                                "first, or pass --build with the folder that build wrote")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is damaged ({err}): rebuild with `rlhf-lab assignments build --out {build_dir}`") \
            from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a manifest of `rlhf-lab assignments build` (a JSON object): rebuild it")
    return manifest


def read_cells(submission: Path) -> list[str]:
    """The code cells of a submitted notebook (format 4, plain JSON), or of the one notebook inside an export zip."""
    if submission.suffix == ".zip":
        with zipfile.ZipFile(submission) as zf:
            names = [n for n in zf.namelist() if n.endswith(".ipynb") and "/." not in "/" + n]
            if len(names) != 1:
                raise ValueError(f"the zip holds {len(names)} notebooks, expected one")
            nb = json.loads(zf.read(names[0]).decode("utf-8"))
    else:
        nb = json.loads(submission.read_text(encoding="utf-8"))
    if nb.get("nbformat") != 4:
        raise ValueError(f"notebook format {nb.get('nbformat')}: open it in Jupyter and save it again (format 4)")
    cells = [cell for cell in nb["cells"] if cell.get("cell_type") == "code"]
    return [c["source"] if isinstance(c["source"], str) else "".join(c["source"]) for c in cells]


class SandboxLink:
    """A running sandbox and the pipe to it; every request shares one deadline."""

    def __init__(self, command: list[str], env: dict, setup: dict, deadline: float):
        self.deadline, self.dead = deadline, None
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True)
        self.log, self.callbacks = b"", {}  # callbacks: id -> wire.Callback handed to the notebook
        threading.Thread(target=self._drain, daemon=True).start()
        self.reader, self.ready = LineReader(self.proc.stdout.fileno()), {}
        try:
            send(self.proc.stdin.fileno(), setup)
        except OSError as err:
            self.stop(f"the sandbox did not start: {err}")

    def wait_ready(self) -> dict:
        """Wait until the notebook has run: its `ready` message (with the cells that raised), or {} past the
        deadline."""
        if not self.dead:
            try:
                self.ready = self.reader.recv(self.deadline)
            except (WireError, OSError) as err:
                self.stop(f"the notebook did not finish running: {err}")
        return self.ready

    def _drain(self) -> None:
        for chunk in iter(lambda: self.proc.stderr.read1(1 << 16), b""):
            self.log = (self.log + chunk)[-4000:]

    def request(self, message: dict) -> dict:
        if self.dead:
            raise RuntimeError(self.dead)
        try:
            send(self.proc.stdin.fileno(), message)
            while "ask" in (answer := self.reader.recv(self.deadline)):  # the notebook calls a grader function
                send(self.proc.stdin.fileno(), self.answer_ask(answer["ask"]))
            return answer
        except (WireError, OSError) as err:
            self.stop(f"the sandbox stopped answering: {err}")
            raise RuntimeError(self.dead) from None

    def answer_ask(self, ask) -> dict:
        """Serve a call of a `Callback` handed to the notebook: data in, data out. Anything else (an unknown id, a
        field other than id, args and kwargs) is refused and noted on every callback handed out."""
        key = ask.get("id") if isinstance(ask, dict) else None
        callback = self.callbacks.get(key) if isinstance(key, int) else None
        args, kwargs = (ask.get("args", []), ask.get("kwargs", {})) if isinstance(ask, dict) else (None, None)
        if callback is None or set(ask) - {"id", "args", "kwargs"} or not isinstance(args, list) \
                or not isinstance(kwargs, dict):
            for handed_out in self.callbacks.values():
                handed_out.refused.append(f"a request the grader does not serve: {json.dumps(ask)[:200]}")
            return {"error": "refused: the grader only answers calls of the functions it handed over"}
        try:
            return {"value": encode(callback(*decode(args), **{k: decode(v) for k, v in kwargs.items()}))}
        except Exception as err:  # the callback refused the arguments (or the budget): the notebook sees why
            return {"error": f"{type(err).__name__}: {err}"}

    def stop(self, reason: str = "finished") -> None:
        """Close the pipe and kill the sandbox's process group (in namespace mode: the whole namespace)."""
        self.dead = self.dead or reason
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        self.proc.wait()
        kill_children()  # what the notebook started in another session, re-parented to us (see become_subreaper)


def answer_value(link: SandboxLink, answer: dict, grads: list | None = None):
    """The value in a sandbox's answer (references become `Remote`s); an error answer raises here, in the test."""
    if "error" in answer:
        raise RuntimeError(f"the submission raised {answer['error']}")
    value = decode(answer.get("value"), lambda m: Remote(link, m))
    if grads and answer.get("grads"):
        # the sandbox sent d(value)/d(input) for each input that requires a gradient: rebuild that graph here
        for x, g in zip(grads, (decode(g) for g in answer["grads"])):
            value = value + (x * g).sum() - (x * g).sum().detach()
    return value


class Remote:
    """A function or object that lives in the sandbox: calling it (or its attributes) runs the student's code there."""

    wire_ref_id = None  # `wire.encode` sends a Remote back as this reference

    def __init__(self, link: SandboxLink, message: dict):
        self.link, self.wire_ref_id, self.type_name = link, message["id"], message.get("type", "object")

    def __call__(self, *args, **kwargs):
        grads: list = []
        callbacks = self.link.callbacks
        message = {"op": "call", "id": self.wire_ref_id, "args": encode(list(args), None, grads, callbacks),
                   "kwargs": encode(kwargs, None, grads, callbacks)["items"]}
        return answer_value(self.link, self.link.request(message), grads)

    def attribute(self, name: str):
        return answer_value(self.link, self.link.request({"op": "attr", "id": self.wire_ref_id, "name": name}))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.attribute(name)

    def __getitem__(self, key):
        return self.attribute("__getitem__")(key)

    def __len__(self):
        return self.attribute("__len__")()

    def __repr__(self):
        return f"<{self.type_name} in the sandbox>"


class NotebookValues(dict):
    """The student's variables as otter's test functions look them up (`env.get(name)`), fetched on first use.

    `grader` values (the bundle's `grader_secret`) come first: a notebook cannot shadow them."""

    def __init__(self, link: SandboxLink, grader: dict | None = None):
        super().__init__(grader or {})
        self.link = link

    def get(self, name, default=None):
        if name not in self:
            answer = self.link.request({"op": "get", "name": name})
            self[name] = default if answer.get("missing") else answer_value(self.link, answer)
        return self[name]


def run_tests(sources: dict[str, str], env) -> dict:
    """Run otter test files (path -> source) against `env`; question name -> score, possible, failing cases."""
    questions = {}
    for path, source in sorted(sources.items()):
        test_file = load_test_file(source, path)
        questions[test_file.name] = run_test_file(test_file, env)
    return questions


def extract_data_files(bundle: zipfile.ZipFile, folder: Path) -> list[Path]:
    """Write the bundle's data files (otter keeps them under files/) into `folder`, where the tests look; an entry
    that would land outside it ("files//etc/x", "files/../x") is skipped. Returns the files written."""
    root, written = folder.resolve(), []
    for name in bundle.namelist():
        target = Path(root, name[len("files/"):]).resolve()
        if name.startswith("files/") and not name.endswith("/") and target.is_relative_to(root) and target != root:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bundle.read(name))
            written.append(target)
    return written


def grade_submission(job: dict) -> dict:
    """Grade one submission. `job`: submission, bundle, sha256, files (the data files to hand the notebook),
    mode ("namespace" or "process"), timeout (s), threads, memory_mb (the sandbox's address space, 0: no limit),
    hide (folders the sandbox must not see)."""
    start = time.monotonic()
    bundle = Path(job["bundle"]).read_bytes()
    if sha256_bytes(bundle) != job["sha256"]:
        return {"error": f"the grader bundle {job['bundle']} changed since it was built (SHA-256 differs): rebuild "
                         "it with `rlhf-lab assignments build` and grade again"}
    try:
        cells = read_cells(Path(job["submission"]))
    except Exception as err:  # a student's file may be anything
        return {"error": f"not a readable notebook: {type(err).__name__}: {err}"}
    with tempfile.TemporaryDirectory(prefix="rlhf-grader-") as private:
        os.chmod(private, 0o700)
        with zipfile.ZipFile(io.BytesIO(bundle)) as zf:
            sources = {n: zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/") and n.endswith(".py")}
            secret = zf.read(GRADER_SECRET).decode().strip() if GRADER_SECRET in zf.namelist() else None
            extract_data_files(zf, Path(private))
        files = {name: base64.b64encode((Path(private) / name).read_bytes()).decode() for name in job["files"]}
        scratch = None if job["mode"] == "namespace" else tempfile.mkdtemp(prefix="rlhf-submission-")
        home = "/tmp/submission/.home" if scratch is None else f"{scratch}/.home"
        link = SandboxLink(sandbox_command(job["mode"], [*job.get("hide", []), private]),
                           sandbox_env(home, job.get("threads")),
                           {"workdir": scratch, "files": files, "cells": cells, "memory_mb": job.get("memory_mb")},
                           start + job["timeout"])
        os.chdir(private)
        try:
            with contextlib.suppress(ImportError):  # most tests need torch: import it while the notebook runs
                importlib.import_module("torch")
            link.wait_ready()
            questions = run_tests(sources, NotebookValues(link, {"grader_secret": secret}))
            student_id = None if link.dead else NotebookValues(link).get("student_id")
        finally:
            link.stop()
            if scratch:
                subprocess.run(["rm", "-rf", scratch], check=False)
    error = "" if link.dead in (None, "finished") else link.dead
    if error and link.proc.returncode == 97:
        error = f"the sandbox could not start: {link.log.decode(errors='replace').strip()[-300:]}"
    return {"questions": questions, "student_id": student_id if isinstance(student_id, str) else None,
            "notebook_errors": link.ready.get("errors", []), "error": error,
            "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> None:
    job_path, result_path = (argv or sys.argv[1:])[:2]
    become_subreaper()
    result = grade_submission(json.loads(Path(job_path).read_text()))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
