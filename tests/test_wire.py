"""The grader's JSON pipe: values survive the round trip, nothing else crosses without becoming a reference."""

import math
import os

import numpy as np
import pytest
import torch

from rlhf_lab.teach.wire import Callback, LineReader, WireError, decode, encode, send


def test_values_survive_the_round_trip():
    value = {"x": torch.tensor([[1.5, float("nan")], [float("inf"), -2.0]]), "ids": torch.tensor([3, 4]),
             "mask": torch.tensor([True, False]), "pair": (1, 2.5), "items": [None, "s", True],
             "scalar": np.float32(0.25), "array": np.arange(6, dtype=np.int16).reshape(2, 3)}
    back = decode(encode(value))
    assert back["x"].dtype == torch.float32 and back["x"].shape == (2, 2)
    assert back["x"][0, 0] == 1.5 and math.isnan(back["x"][0, 1]) and back["x"][1, 0] == math.inf
    assert back["ids"].dtype == torch.int64 and back["ids"].tolist() == [3, 4]
    assert back["mask"].dtype == torch.bool and back["mask"].tolist() == [True, False]
    assert back["pair"] == (1, 2.5) and back["items"] == [None, "s", True]
    assert isinstance(back["scalar"], np.float32) and back["scalar"] == 0.25
    assert back["array"].dtype == np.int16 and back["array"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_other_objects_become_references_or_are_refused():
    model = torch.nn.Linear(2, 1)
    refs = {}
    message = encode({"model": model}, refs)["items"]["model"]
    assert message["__t__"] == "ref" and refs[message["id"]] is model and message["callable"]
    with pytest.raises(WireError, match="Linear cannot cross"):
        encode(model)


def test_tensors_that_need_a_gradient_are_collected_in_order():
    a, b = torch.ones(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    sent = []
    message = encode([a, torch.ones(1), {"b": b}], None, sent)
    assert sent == [a, b]
    received = []
    back = decode(message, None, received)
    assert [t.shape for t in received] == [(2,), (3,)] and all(t.requires_grad for t in received)
    assert back[0] is received[0] and not back[1].requires_grad


def test_the_reader_refuses_garbage_and_end_of_file():
    read, write = os.pipe()
    send(write, {"a": 1})
    os.write(write, b"not json\n[1]\n")
    os.close(write)
    reader = LineReader(read)
    assert reader.recv(deadline=None) == {"a": 1}
    with pytest.raises(WireError, match="not a message"):
        reader.recv()
    with pytest.raises(WireError, match="expected a JSON object"):
        reader.recv()
    with pytest.raises(WireError, match="closed the pipe"):
        reader.recv()
    os.close(read)


def test_a_callback_crosses_only_as_an_argument_and_arrives_as_what_the_receiver_makes_of_it():
    rate = Callback(lambda p, k: p + k, "rate")
    with pytest.raises(WireError, match="callback rate can only be an argument"):
        encode({"rate": rate}, {})
    callbacks = {}
    message = encode([1, {"rate": rate}], None, None, callbacks)
    assert message[1]["items"]["rate"] == {"__t__": "callback", "id": id(rate), "name": "rate"}
    assert callbacks == {id(rate): rate} and rate(2, 3) == 5 and rate.refused == []
    back = decode(message, None, None, lambda m: ("made", m["name"]))
    assert back == [1, {"rate": ("made", "rate")}]
    assert decode(message)[1]["rate"]["__t__"] == "callback", "without a maker it stays a plain message"
