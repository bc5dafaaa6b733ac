"""Several processes writing one SQLite store at once, and a rater process killed mid-way."""

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rlhf_lab.feedback.schema import item_responses_t, items_t
from rlhf_lab.feedback.store import FeedbackStore

REPO = Path(__file__).resolve().parents[1]

N_PROCESSES = 4
N_PER_PROCESS = 150


def _seed_store(path, n_items):
    with FeedbackStore(path) as s:
        ids = s.add_responses([dict(prompt="p", response=f"reply {i}", model="m", iteration=0, sampling={})
                               for i in range(2 * n_items)])
        return [s.add_item(ids[i:i + 2]) for i in range(0, len(ids), 2)]


def _writer(path, worker, item_ids, barrier, queue):
    """Each worker is its own annotator; all judge the same items, and also race for one shared annotator id."""
    store = FeedbackStore(path)  # opened in the child: never share an engine across processes
    barrier.wait()  # start writing together
    mine, shared_wins = [], 0
    for n, item in enumerate(item_ids):
        mine.append(store.record_pairwise(item, f"worker-{worker}", "AB"[n % 2]))
        if n % 10 == worker:
            try:
                store.record_pairwise(item, "shared", "tie")
                shared_wins += 1
            except ValueError:
                pass
    store.close()
    queue.put((worker, mine, shared_wins))


def test_processes_write_concurrently_every_judgment_once(tmp_path):
    path = tmp_path / "shared.db"
    items = _seed_store(path, N_PER_PROCESS)
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker, as separate kernels would be
    queue, barrier = ctx.Queue(), ctx.Barrier(N_PROCESSES)
    procs = [ctx.Process(target=_writer, args=(str(path), w, items, barrier, queue)) for w in range(N_PROCESSES)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with FeedbackStore(path) as s:
        df = s.judgments_df()
    returned = sorted(j for _, mine, _ in results for j in mine)
    workers = df[df["annotator"].str.startswith("worker-")]
    assert len(returned) == N_PROCESSES * N_PER_PROCESS == len(workers)
    assert sorted(workers["judgment_id"]) == returned  # every judgment there, none twice
    assert df["judgment_id"].is_unique
    assert not workers.duplicated(["annotator", "item_id"]).any()
    for w in range(N_PROCESSES):
        assert (workers["annotator"] == f"worker-{w}").sum() == N_PER_PROCESS
    shared = df[df["annotator"] == "shared"]
    assert len(shared) == sum(wins for *_, wins in results) and shared["item_id"].is_unique


CHILD = textwrap.dedent("""
    import sys
    from rlhf_lab.feedback.store import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    for item in store.pending_items("learner"):
        judgment = store.record_rating(item.id, "learner", [1 + item.id % 7])
        print(judgment, flush=True)
""")


def test_killed_rater_leaves_a_clean_store(tmp_path):
    path = tmp_path / "killed.db"
    with FeedbackStore(path) as s:
        ids = s.add_responses([dict(prompt="p", response=f"r{i}", model="m", iteration=0, sampling={})
                               for i in range(5000)])
        with s.transaction() as conn:  # bulk-create the items in one transaction (setup only)
            conn.execute(items_t.insert(), [dict(id=i, kind="rating", prompt="p", created_at=0.0)
                                            for i in range(1, 5001)])
            conn.execute(item_responses_t.insert(), [dict(item_id=i, position=0, response_id=r)
                                                     for i, r in zip(range(1, 5001), ids)])
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    printed = []
    deadline = time.monotonic() + 60
    while len(printed) < 200 and time.monotonic() < deadline:
        printed.append(int(child.stdout.readline()))
    os.kill(child.pid, signal.SIGKILL)  # mid-way: the child is between or inside transactions
    child.wait(timeout=30)
    printed += [int(line) for line in child.stdout.read().split()]  # what it flushed before dying
    assert child.returncode == -signal.SIGKILL and 200 <= len(printed) < 5000

    with FeedbackStore(path) as s:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        df = s.judgments_df()
        assert set(printed) <= set(df["judgment_id"])  # every committed (and printed) judgment survived
        assert len(df) - len(printed) <= 1  # at most one committed whose id was not yet printed
        assert df["item_id"].is_unique
        resumed = s.pending_items("learner")
        assert len(resumed) == 5000 - len(df) and resumed[0].id == len(df) + 1
        s.record_rating(resumed[0].id, "learner", 4)  # and the store takes new writes
