"""A class of 300 students rating into one PostgreSQL class store at once (rlhf_lab.feedback.classload).

    python bench/class_load.py                       # 300 students x 20 items over about a minute, 3 worker kills
    python bench/class_load.py --students 60 --seconds 20

Starts a PostgreSQL server of its own on 127.0.0.1 (Debian's binaries, a temporary folder, stopped at the end),
gives every student their own login (row-level security), runs the students as threads in worker processes with
random think times, SIGKILLs a few workers mid-run and restarts them (their students resume), then checks the store.
Prints the figures; the last line is one JSON object (students, judgments, kills, lost, duplicated,
cross_student_writes, unfinished, write_p50_ms, write_p95_ms, wall_s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile

from rlhf_lab.core.machine import machine_info
from rlhf_lab.feedback.classload import class_load
from rlhf_lab.feedback.pgserver import LocalPostgres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--items-each", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="about how long each student takes")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tempfile.mkdtemp(prefix="rlhf-lab-bench-pg-")
    server = LocalPostgres(folder, port=port).start(max_connections=args.students + 50)
    try:
        figures = class_load(server.create_database("class_load"), students=args.students,
                             items_each=args.items_each, seconds=args.seconds, kills=args.kills,
                             workers=args.workers, seed=args.seed, timeout_s=20 * args.seconds + 300)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    for key, value in figures.items():
        print(f"{key:<22} {value}")
    print(json.dumps({"machine": machine_info(), **figures}))


if __name__ == "__main__":
    main()
