"""The student side of grading: run a submitted notebook's code cells, then answer the grader's questions over a pipe.

    python -m rlhf_lab.teach.sandbox        (started by `rlhf_lab.teach.grading`, never by hand)

This process holds no test and no grader bundle: it receives the notebook's cells, the assignment's data files and its
memory limit (address space, `RLIMIT_AS`) as the first message on stdin, writes the files into its working folder,
runs the cells in an IPython shell (so magics work; `otter` is replaced by a stand-in whose `grader.check(...)` does
nothing), says `ready`, and then serves requests until stdin closes: `get` a variable, `call` a function or a
reference, `attr` of a reference. Answers are data (see `rlhf_lab.teach.wire`); a call whose arguments require a
gradient and whose result is a scalar tensor also returns the gradients, so a grader can check them. A grader
function among a call's arguments (a `wire.Callback`, such as assignment 5's `rate`) arrives as a `GraderFunction`:
calling it sends `{"ask": ...}` and waits for the grader's answer, inside the grader's call. The protocol uses
copies of fds 0 and 1 made before any student code runs; the student's prints go to stderr. What isolates this
process (another user, namespaces, a scratch folder) is decided by whoever starts it: `rlhf_lab.teach.isolation`.
"""

from __future__ import annotations

import base64
import os
import resource
import sys
import traceback
import types
from pathlib import Path

from rlhf_lab.teach.wire import LineReader, WireError, decode, encode, send

__all__ = ["NoGrader", "install_fake_otter", "write_files", "run_cells", "Channel", "GraderFunction", "serve", "main"]


class NoGrader:
    """Stands in for `otter.Notebook` while grading: checks, exports and everything else do nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def install_fake_otter() -> None:
    """Make `import otter; otter.Notebook(...)` work without otter and without reading any test."""
    fake = types.ModuleType("otter")
    fake.Notebook = NoGrader
    sys.modules["otter"] = fake


def write_files(files: dict[str, str], folder: Path) -> None:
    """Write base64-encoded files under `folder`; names must be plain relative paths."""
    for name, data in files.items():
        path = Path(name)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"refusing to write {name!r} outside the working folder")
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(base64.b64decode(data))


def run_cells(cells: list[str]) -> tuple[dict, list[str]]:
    """Run code cells in order in one IPython shell, going on after errors as Jupyter's "run all" with errors
    allowed would; return the namespace and one line per cell that raised."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    errors = []
    for i, source in enumerate(cells):
        result = shell.run_cell(source, store_history=False, silent=False)
        if not result.success:
            err = result.error_in_exec or result.error_before_exec
            errors.append(f"cell {i}: {type(err).__name__}: {err}")
    return shell.user_ns, errors


class Channel:
    """The sandbox's end of the pipe: the grader's requests come in on `reader`, answers and asks go out on `out_fd`."""

    def __init__(self, reader: LineReader, out_fd: int):
        self.reader, self.out_fd = reader, out_fd

    def ask(self, message: dict) -> dict:
        """Ask the grader (while it waits on a call of ours) and return its answer."""
        send(self.out_fd, {"ask": message})
        return self.reader.recv()


class GraderFunction:
    """A grader's function handed to the notebook: calling it asks the grader, which answers with data or refuses."""

    def __init__(self, channel: Channel, message: dict):
        self.channel, self.wire_callback_id = channel, message["id"]
        self.__name__ = str(message.get("name", "callback"))

    def __call__(self, *args, **kwargs):
        answer = self.channel.ask({"id": self.wire_callback_id, "args": encode(list(args)),
                                   "kwargs": encode(kwargs)["items"]})
        if "error" in answer:
            raise RuntimeError(f"{self.__name__}: {answer['error']}")
        return decode(answer.get("value"))

    def __repr__(self):
        return f"<grader function {self.__name__}>"


def _answer(request: dict, namespace: dict, refs: dict, channel: Channel) -> dict:
    op = request.get("op")
    if op == "get":
        if request["name"] not in namespace:
            return {"missing": True}
        return {"value": encode(namespace[request["name"]], refs)}
    target = refs.get(request.get("id"))
    if target is None:
        return {"error": "unknown reference"}
    if op == "attr":
        return {"value": encode(getattr(target, request["name"]), refs)}
    if op == "call":
        grads: list = []
        def grader_function(message):
            return GraderFunction(channel, message)

        args = decode(request.get("args", []), lambda m: refs[m["id"]], grads, grader_function)
        kwargs = {k: decode(v, lambda m: refs[m["id"]], grads, grader_function)
                  for k, v in request.get("kwargs", {}).items()}
        result = target(*args, **kwargs)
        answer = {"value": encode(result, refs)}
        if grads and getattr(result, "requires_grad", False) and result.numel() == 1:
            import torch
            found = torch.autograd.grad(result.reshape(()), grads, allow_unused=True)
            answer["grads"] = [encode(torch.zeros_like(x) if g is None else g) for x, g in zip(grads, found)]
        return answer
    return {"error": f"unknown request {op!r}"}


def serve(reader: LineReader, out_fd: int, namespace: dict) -> None:
    """Answer requests until the grader closes the pipe; a student exception becomes an `error` answer."""
    refs: dict = {}
    channel = Channel(reader, out_fd)
    while True:
        try:
            request = reader.recv()
        except WireError:
            return
        try:
            answer = _answer(request, namespace, refs, channel)
        except Exception as err:  # the student's code raised: tell the grader, keep serving
            answer = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=-3)[-2000:]}
        send(out_fd, answer)


def main() -> None:
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # whatever the student prints goes to stderr, never into the protocol
    reader = LineReader(in_fd)
    setup = reader.recv()
    folder = Path(setup.get("workdir") or "/tmp/submission")
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    write_files(setup.get("files", {}), folder)
    install_fake_otter()
    if setup.get("memory_mb"):  # address space, soft and hard: an unprivileged sandbox cannot raise it again
        limit = int(setup["memory_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    namespace, errors = run_cells(setup.get("cells", []))
    send(out_fd, {"ready": True, "errors": errors})
    serve(reader, out_fd, namespace)
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: a student's atexit hook or thread cannot delay the end


if __name__ == "__main__":
    main()
