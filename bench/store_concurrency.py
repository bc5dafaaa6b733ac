"""Many processes write judgments into one SQLite feedback store at once, some are SIGKILLed mid-write and started
again; afterwards every committed judgment must be there exactly once (issue #20's concurrency attack).

    python bench/store_concurrency.py                      # 13 writers x 150 items, 6 kills
    python bench/store_concurrency.py --writers 4 --items 40 --kills 2

Each writer is one annotator in its own process: it judges every pending pairwise item (a rerun resumes from
`pending_items`), with a short random pause between judgments, and logs each judgment id to its own file after
`record_pairwise` returned (the commit). The driver kills `kills` running writers at random moments and starts
them again. The check: every logged judgment is in the store (lost), no (annotator, item) is there twice
(duplicated), every annotator judged every item (unfinished), SQLite's integrity check passes. The last line is one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlhf_lab.core.machine import machine_info


def writer(store_path: str, name: str, log_path: str, seed: int) -> None:
    """One annotator: judge every pending item, logging each judgment id after its commit."""
    from rlhf_lab.feedback.store import FeedbackStore

    rng = random.Random(seed)
    store = FeedbackStore(store_path)
    with open(log_path, "a") as log:
        for item in store.pending_items(name, "pairwise"):
            judgment = store.record_pairwise(item.id, name, rng.choice(["A", "B", "tie"]))
            log.write(f"{judgment}\n")
            log.flush()
            time.sleep(rng.random() * 0.004)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=13)
    parser.add_argument("--items", type=int, default=150)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--writer", nargs=4, help=argparse.SUPPRESS)  # internal: store name log seed
    args = parser.parse_args()
    if args.writer:
        store_path, name, log_path, seed = args.writer
        writer(store_path, name, log_path, int(seed))
        return
    from rlhf_lab.feedback.store import FeedbackStore

    folder = Path(tempfile.mkdtemp(prefix="rlhf-concurrency-"))
    path = folder / "feedback.db"
    with FeedbackStore(path) as store:
        ids = store.add_responses([dict(prompt=f"prompt {i}", response=f"reply {ab}", model="m", iteration=0)
                                   for i in range(args.items) for ab in "AB"])
        store.add_items([ids[i:i + 2] for i in range(0, len(ids), 2)])
    rng, started = random.Random(args.seed), time.perf_counter()

    def spawn(w: int, run: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--writer", str(path), f"w{w}", str(folder / f"w{w}.log"),
                                 str(args.seed * 1000 + w * 10 + run)])

    procs = {w: spawn(w, 0) for w in range(args.writers)}
    kills = 0
    while kills < args.kills:
        time.sleep(rng.uniform(0.5, 2.0))
        running = [w for w, p in procs.items() if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        kills += 1
        procs[victim] = spawn(victim, kills)
    for p in procs.values():
        p.wait()
    wall = time.perf_counter() - started
    with FeedbackStore(path) as store:
        df = store.judgments_df()
        with store.engine.connect() as conn:
            integrity = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
    logged = [int(x) for w in range(args.writers) for x in (folder / f"w{w}.log").read_text().split()]
    per = df.groupby(["annotator", "item_id"]).size()
    figures = {"writers": args.writers, "items_each": args.items, "kills": kills, "judgments": len(df),
               "expected": args.writers * args.items, "logged": len(logged),
               "lost": len(set(logged) - set(df["judgment_id"])), "duplicated": int((per > 1).sum()),
               "unfinished": int((df.groupby("annotator").size() < args.items).sum()
                                 + args.writers - df["annotator"].nunique()),
               "integrity": integrity, "wall_s": round(wall, 1)}
    print(f"{figures['writers']} writers x {args.items} items, {kills} killed mid-run and restarted: "
          f"{figures['judgments']} judgments (expected {figures['expected']}), {figures['lost']} lost, "
          f"{figures['duplicated']} duplicated, {figures['unfinished']} unfinished; integrity {integrity}")
    print(json.dumps({"machine": machine_info(), **figures}))


if __name__ == "__main__":
    main()
