"""Two kernels of one annotator saving drafts into one drafts file at once: neither loses the other's drafts."""

import multiprocessing as mp

from rlhf_lab.feedback.drafts import DraftBook


def _kernel(path, who, barrier):
    book = DraftBook(path, "store", "alice")
    barrier.wait()  # both save at the same moment
    for n in range(30):
        book.put(f"item:{who}{n}", [n, who], "fp")
    for n in range(0, 30, 2):  # answers submitted: their drafts go, the other kernel's stay
        book.drop(f"item:{who}{n}")


def test_two_kernels_saving_drafts_at_once_keep_each_others(tmp_path):
    path = tmp_path / "feedback.db-drafts" / "alice.json"
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(2)
    kernels = [ctx.Process(target=_kernel, args=(path, who, barrier)) for who in "AB"]
    for k in kernels:
        k.start()
    for k in kernels:
        k.join(timeout=60)
    assert [k.exitcode for k in kernels] == [0, 0]
    entries = DraftBook(path, "store", "alice").entries()
    assert {key: e["answer"] for key, e in entries.items()} == {
        f"item:{who}{n}": [n, who] for who in "AB" for n in range(1, 30, 2)}
