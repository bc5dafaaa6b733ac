"""A class under load: many simulated students rate into one PostgreSQL class store at once, some of their
kernels are killed mid-write and restarted, and afterwards every committed judgment is checked.

    figures = class_load(admin_url, students=300, items_each=20, seconds=60, kills=3)

Each student logs in with their own `secure_class` login, judges their assigned items with random think times
(exponential, mean seconds / items_each), and once tries to write a judgment as another student (the server must
refuse it). Students run as threads in `workers` processes (a student is one connection, as a kernel would be);
`kills` random workers are SIGKILLed mid-run and started again, and their students resume from `pending_items`.
A worker logs each judgment after its commit returned, so the check is: every logged judgment is in the store,
no (student, item) is there twice, every student finished, no cross-student write got in.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["class_load"]


def _setup(admin_url: str, students: int, items_each: int, k: int, seed: int) -> dict[str, str]:
    from rlhf_lab.feedback.classroom import assign_items, enroll, secure_class
    from rlhf_lab.feedback.store import FeedbackStore

    n_items = -(-students * items_each // k)
    with FeedbackStore(admin_url) as store:
        if store.counts()["items"]:
            raise ValueError("class_load needs an empty database: it adds items and students of its own")
        ids = store.add_responses([dict(prompt=f"load prompt {i}", response=f"reply {ab} to {i}", model="load",
                                        iteration=0) for i in range(n_items) for ab in "ab"])
        store.add_items([ids[2 * i:2 * i + 2] for i in range(n_items)])
        enroll(store, [f"student{n:03d}" for n in range(students)])
        assign_items(store, k=k, seed=seed)
        return secure_class(store)


def _student(sid: str, url: str, other: str, mean_think_s: float, seed: int, log, lock) -> None:
    from rlhf_lab.feedback.store import FeedbackStore

    rng = random.Random(f"{seed}/{sid}")
    store = FeedbackStore(url)
    try:
        pending = store.pending_items(sid)
        if pending:  # once per (re)start: a write as another student must be refused
            try:
                store.record_pairwise(pending[0].id, other, "A")
                verdict = "cross_allowed"
            except PermissionError:
                verdict = "cross_refused"
            with lock:
                log.write(json.dumps({"event": verdict, "student": sid}) + "\n")
                log.flush()
        for item in pending:
            time.sleep(rng.expovariate(1 / mean_think_s))
            started = time.perf_counter()
            judgment = store.record_pairwise(item.id, sid, rng.choice("AB"))
            seconds = time.perf_counter() - started
            with lock:
                log.write(json.dumps({"event": "judged", "student": sid, "item": item.id, "judgment": judgment,
                                      "seconds": seconds}) + "\n")
                log.flush()
    finally:
        store.close()


def _worker(logins_file: str, log_file: str, mean_think_s: float, seed: int) -> None:
    logins = json.loads(Path(logins_file).read_text())
    everyone = json.loads(Path(logins_file).with_suffix(".all").read_text())
    lock = threading.Lock()
    with open(log_file, "a") as log:
        threads = []
        for sid, url in logins.items():
            other = everyone[(everyone.index(sid) + 1) % len(everyone)]
            threads.append(threading.Thread(target=_student, args=(sid, url, other, mean_think_s, seed, log, lock)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def _spawn(folder: Path, w: int, part: dict, everyone: list, mean_think_s: float, seed: int) -> subprocess.Popen:
    logins = folder / f"logins{w}.json"
    logins.write_text(json.dumps(part))
    logins.with_suffix(".all").write_text(json.dumps(everyone))
    logins.chmod(0o600)
    return subprocess.Popen([sys.executable, "-m", "rlhf_lab.feedback.classload", str(logins),
                             str(folder / f"log{w}.jsonl"), str(mean_think_s), str(seed)])


def class_load(admin_url: str, students: int = 300, items_each: int = 20, seconds: float = 60.0, kills: int = 3,
               workers: int = 10, k: int = 3, seed: int = 0, timeout_s: float = 600.0) -> dict:
    """Run the load (see the module docstring) against the empty PostgreSQL database at `admin_url`; returns the
    figures: students, judgments, kills, lost, duplicated, cross_student_writes, unfinished, p50/p95 latency."""
    logins = _setup(admin_url, students, items_each, k, seed)
    everyone = sorted(logins)
    parts = [dict((s, logins[s]) for s in everyone[w::workers]) for w in range(workers)]
    mean_think_s = seconds / items_each
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rlhf-lab-load-") as tmp:
        folder = Path(tmp)
        procs = {w: _spawn(folder, w, parts[w], everyone, mean_think_s, seed) for w in range(workers)}
        victims = rng.choice(workers, size=min(kills, workers), replace=False)
        try:
            for w, at in sorted(zip(victims, rng.uniform(0.2, 0.7, len(victims)) * seconds), key=lambda x: x[1]):
                time.sleep(max(0.0, started + at - time.perf_counter()))
                procs[w].send_signal(signal.SIGKILL)
                procs[w].wait()
                procs[w] = _spawn(folder, w, parts[w], everyone, mean_think_s, seed + 1)  # the kernel restarted
            for w, proc in procs.items():
                proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - started)))
                if proc.returncode != 0:
                    raise RuntimeError(f"worker {w} failed with exit code {proc.returncode}")
        finally:  # a failure or a timeout leaves no worker behind
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        wall = time.perf_counter() - started
        events = [json.loads(line) for w in range(workers)
                  for line in (folder / f"log{w}.jsonl").read_text().splitlines() if line.strip()]
    return _check(admin_url, events, students, items_each, len(victims), wall)


def _check(admin_url, events, students, items_each, kills, wall) -> dict:
    import sqlalchemy as sa

    from rlhf_lab.feedback.classroom import progress
    from rlhf_lab.feedback.schema import judgments_t
    from rlhf_lab.feedback.store import FeedbackStore

    with FeedbackStore(admin_url) as store:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(judgments_t.c.id, judgments_t.c.annotator, judgments_t.c.item_id)).all()
        done = progress(store)
    in_store = {r.id: (r.annotator, r.item_id) for r in rows}
    judged = [e for e in events if e["event"] == "judged"]
    lost = sum(in_store.get(e["judgment"]) != (e["student"], e["item"]) for e in judged)
    pairs = [(a, i) for a, i in in_store.values()]
    enrolled = set(done["student_id"])
    latencies = np.array([e["seconds"] for e in judged])
    return dict(students=students, items_each=items_each, judgments=len(in_store), logged=len(judged), kills=kills,
                lost=int(lost), duplicated=len(pairs) - len(set(pairs)),
                cross_student_writes=sum(e["event"] == "cross_allowed" for e in events)
                + sum(a not in enrolled for a, _ in pairs),
                cross_refused=sum(e["event"] == "cross_refused" for e in events),
                unfinished=int((done["remaining"] > 0).sum()), wall_s=round(wall, 1),
                write_p50_ms=round(float(np.percentile(latencies, 50)) * 1000, 1),
                write_p95_ms=round(float(np.percentile(latencies, 95)) * 1000, 1))


if __name__ == "__main__":  # a worker process: python -m rlhf_lab.feedback.classload LOGINS LOG THINK SEED
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
