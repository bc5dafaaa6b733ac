"""The JSON pipe between the grader and a sandboxed student notebook: values as plain JSON, one message per line.

Only data crosses the pipe, never code or pickles: None, bools, numbers, strings, lists, tuples and dicts as
themselves; torch tensors and numpy arrays as `{"__t__": "tensor" | "ndarray", "dtype", "shape", "data"}` with the
data as a flat list; anything else (a function, an `nn.Module`, a DataFrame) stays where it lives and travels as a
reference `{"__t__": "ref", "id", "type"}` that the other side can call or ask for an attribute. Tensors that require
a gradient are marked `"grad": true`; `encode` collects them so the caller can line up the gradients that come back.

A `Callback` is the one way a grader's function reaches the sandbox: it travels as `{"__t__": "callback", "id",
"name"}`, and calling it there sends an `ask` back to the grader while the grader waits on its own call; the grader
answers with data only. Nothing else of the function or of the object behind it can be reached: no attribute, no
other method, no reference in the answer.
"""

from __future__ import annotations

import json
import os
import select
import time

__all__ = ["MAX_MESSAGE_BYTES", "WireError", "Callback", "encode", "decode", "send", "LineReader"]

MAX_MESSAGE_BYTES = 64 * 2**20  # a longer line is refused: a sandbox cannot fill the grader's memory


class WireError(Exception):
    """The other side sent something that is not a message, sent too much, went silent past the deadline or left."""


class Callback:
    """A grader-side function handed to the sandbox: callable there with data arguments, answered with data.

    `refused` collects the requests about it that the grader would not serve (a notebook that forged a message)."""

    def __init__(self, func, name: str = "callback"):
        self.func, self.name, self.refused = func, name, []

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


def _tensor_types():
    import sys
    torch, numpy = sys.modules.get("torch"), sys.modules.get("numpy")
    return (torch.Tensor if torch else ()), (numpy.ndarray if numpy else ()), (numpy.generic if numpy else ())


def encode(value, refs=None, grads: list | None = None, callbacks: dict | None = None):
    """A JSON-ready form of `value`. Values that cannot travel are stored in `refs` (a dict id -> object) and sent as
    references; without `refs` they raise WireError. Tensors requiring a gradient are appended to `grads`; `Callback`s
    are stored in `callbacks` (id -> callback) and sent as callbacks (without `callbacks` they raise WireError)."""
    tensor, ndarray, npscalar = _tensor_types()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [encode(v, refs, grads, callbacks) for v in value]
        return items if isinstance(value, list) else {"__t__": "tuple", "items": items}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__t__": "dict", "items": {k: encode(v, refs, grads, callbacks) for k, v in value.items()}}
    if isinstance(value, Callback):
        if callbacks is None:
            raise WireError(f"the callback {value.name} can only be an argument of a call into the sandbox")
        callbacks[id(value)] = value
        return {"__t__": "callback", "id": id(value), "name": value.name}
    if tensor and isinstance(value, tensor):
        detached = value.detach().cpu()
        out = {"__t__": "tensor", "dtype": str(detached.dtype).removeprefix("torch."), "shape": list(detached.shape),
               "data": detached.reshape(-1).tolist()}
        if value.requires_grad and grads is not None:
            out["grad"] = True
            grads.append(value)
        return out
    if ndarray and isinstance(value, (ndarray, npscalar)):
        return {"__t__": "ndarray", "dtype": str(value.dtype), "shape": list(value.shape),
                "data": value.reshape(-1).tolist()}
    if "wire_ref_id" in getattr(type(value), "__dict__", {}):  # a proxy of a value that lives on the other side
        return {"__t__": "ref", "id": value.wire_ref_id}
    if refs is None:
        raise WireError(f"a {type(value).__name__} cannot cross the pipe")
    refs[id(value)] = value
    return {"__t__": "ref", "id": id(value), "type": type(value).__name__, "callable": callable(value)}


def decode(value, make_ref=None, grads: list | None = None, make_callback=None):
    """The inverse of `encode`. References become `make_ref(message)` and callbacks `make_callback(message)` (or stay
    dicts); tensors marked for a gradient are created with `requires_grad=True` and appended to `grads`."""
    if isinstance(value, list):
        return [decode(v, make_ref, grads, make_callback) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get("__t__")
    if kind == "tuple":
        return tuple(decode(v, make_ref, grads, make_callback) for v in value["items"])
    if kind == "dict":
        return {k: decode(v, make_ref, grads, make_callback) for k, v in value["items"].items()}
    if kind == "tensor":
        import torch
        out = torch.tensor(value["data"], dtype=getattr(torch, value["dtype"])).reshape(value["shape"])
        if value.get("grad") and grads is not None:
            out.requires_grad_(True)
            grads.append(out)
        return out
    if kind == "ndarray":
        import numpy
        out = numpy.array(value["data"], dtype=value["dtype"]).reshape(value["shape"])
        return out[()] if out.ndim == 0 else out
    if kind == "ref" and make_ref is not None:
        return make_ref(value)
    if kind == "callback" and make_callback is not None:
        return make_callback(value)
    return value


def send(fd: int, message: dict) -> None:
    """Write one message as one line to a file descriptor."""
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class LineReader:
    """Reads one JSON message per line from a file descriptor, with a deadline and a size limit."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, b""

    def recv(self, deadline: float | None = None) -> dict:
        """The next message; WireError on end of file, garbage, an oversized line, or once `deadline` (monotonic)
        has passed."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                raise WireError(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise WireError("no answer before the time limit")
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                raise WireError("the other side closed the pipe")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as err:
            raise WireError(f"not a message: {err}") from None
        if not isinstance(message, dict):
            raise WireError("not a message: expected a JSON object")
        return message
