"""`rlhf-lab class ...`: run a class store from a terminal.

    rlhf-lab class serve --dir ~/class-db --class cs329 --allow 10.0.0.0/8     # a PostgreSQL server of your own
    rlhf-lab feedback simulate --store URL --annotators 0 --items 200 --model corpus   # the items to judge
    rlhf-lab class create --store URL --roster roster.csv --k 3 --logins logins.csv
    rlhf-lab class progress --store URL
    rlhf-lab class share --store URL --out class_pairs.jsonl      # the class's judgments, pseudonymous, for students

`serve` prints the instructor's URL (it holds the password: keep it private); `create` enrolls the roster, assigns
each item to k students and writes one login URL per student to --logins (mode 600), to hand out one by one: a new
file, or the logins file of an earlier `create` (added to); any other file is refused before a password is set.
`share` writes every pairwise judgment with each student's id replaced by a pseudonym, for students to compare
their taste with the class's (`you_vs_class(..., class_pairs=...)`), which their own logins cannot read.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from rlhf_lab.feedback.classroom import assign_items, enroll, progress, roster, secure_class, share_class_pairs
from rlhf_lab.feedback.pgserver import LocalPostgres, check_database_name, reachable_host
from rlhf_lab.feedback.store import FeedbackStore

__all__ = ["add_class_commands"]


def cmd_serve(args) -> None:
    server = LocalPostgres(args.dir, port=args.port, host=args.host)  # checks --port
    if args.stop:
        if not server.running():
            raise ValueError(f"no server is running in {server.folder}: nothing to stop (is --dir the folder you "
                             "served from?)")
        server.stop()
        print(f"stopped the server in {server.folder}")
        return
    check_database_name(args.class_id, "--class")  # everything checked before the server starts
    if args.max_connections < 1:
        raise ValueError(f"--max-connections must be at least 1 (about one per student, plus a few), got "
                         f"{args.max_connections}")
    server.init()
    if args.allow:
        server.allow(args.allow)
    server.start(max_connections=args.max_connections)
    url = server.create_database(args.class_id)
    print(f"PostgreSQL is running on {args.host}:{args.port} (data in {server.data}); stop it with "
          f"`rlhf-lab class serve --dir {args.dir} --stop`.")
    public = reachable_host(args.host, args.allow)
    if public != args.host:  # 0.0.0.0 is where it listens; students connect to this machine's address
        url = url.replace(f"@{args.host}:{args.port}/", f"@{public}:{args.port}/", 1)
        print(f"Students reach it at {public} (this machine's address for {', '.join(args.allow) or 'its name'}); "
              "if they connect from elsewhere, put the address they use in the URL before `class create`.")
    print(f"The instructor's URL of class {args.class_id} (keep it private):\n{url}")


def _open(url: str) -> FeedbackStore:
    if "://" not in url:
        raise ValueError("--store is the class store's URL, e.g. postgresql+psycopg://user:password@host:5432/cs329 "
                         "(`rlhf-lab class serve` prints one)")
    return FeedbackStore(url)


LOGINS_HEADER = ["student_id", "display_name", "url"]
BOM = "\ufeff"
"""Starts a new logins file: Excel, which an instructor may open it in, then reads it as UTF-8 (accented names)."""


def _open_logins(path: Path, roster_path: Path):
    """The --logins file, opened before any student's password is set (a login URL that cannot be written is lost
    for good): a new file, made with mode 600, or a logins file an earlier `class create` wrote (its header), to
    add to (made private again). Anything else is refused: a folder, the roster, another file. -> (file, new)."""
    same = path.resolve() == roster_path.resolve() or (path.exists() and roster_path.exists()
                                                       and path.samefile(roster_path))
    if same:
        raise ValueError(f"--logins {path} is the roster: give the logins their own file, e.g. --logins logins.csv")
    if path.is_dir():
        raise ValueError(f"--logins {path} is a folder: give a file name such as {path / 'logins.csv'}")
    if not path.parent.is_dir():
        raise ValueError(f"--logins {path}: its folder {path.parent} does not exist; create it or give another path")
    if path.exists():
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), None)
        if header != LOGINS_HEADER:
            raise ValueError(f"--logins {path} already exists and is not a logins file of `rlhf-lab class create`: "
                             "give a new file name (it was left as it was)")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", newline="", encoding="utf-8"), False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    return os.fdopen(fd, "w", newline="", encoding="utf-8"), True


def cmd_create(args) -> None:
    with _open(args.store) as store:
        postgres = store.engine.dialect.name == "postgresql"
        out, fresh = _open_logins(Path(args.logins), Path(args.roster)) if postgres else (None, False)
        logins = {}
        try:
            new = enroll(store, args.roster)
            assigned = assign_items(store, k=args.k, seed=args.seed)
            if not store.counts()["items"]:
                raise ValueError("the class store has no items yet: add some with `rlhf-lab feedback simulate "
                                 "--store URL --annotators 0 --items 200`, then run this again")
            names = roster(store).set_index("student_id")["display_name"].to_dict()
            idle = list(progress(store).query("assigned == 0")["student_id"])
            start = os.lseek(out.fileno(), 0, os.SEEK_END) if postgres else 0

            def keep(urls: dict) -> None:  # on disk before the passwords are committed: a full disk loses none
                lines = io.StringIO()
                writer = csv.writer(lines)
                if fresh:
                    writer.writerow(LOGINS_HEADER)
                writer.writerows([sid, names.get(sid, ""), url] for sid, url in sorted(urls.items()))
                data = (BOM if fresh else "").encode() + lines.getvalue().encode("utf-8")
                while data:  # unbuffered: nothing is left to be written later, when the file is closed
                    data = data[os.write(out.fileno(), data):]
                os.fsync(out.fileno())
            try:
                logins = secure_class(store, keep=keep) if postgres else {}
            except BaseException:  # no password was set: the lines written for them go
                os.ftruncate(out.fileno(), start)
                raise
        finally:
            if out is not None:
                out.close()
                if fresh and not logins:  # nothing to hand out: no empty file left behind
                    Path(args.logins).unlink()
    print(f"{new} new students enrolled; {assigned['item_id'].nunique()} items assigned to {args.k} students each")
    if idle:
        print(f"{len(idle)} students have no items to judge ({', '.join(idle[:5])}{', ...' if len(idle) > 5 else ''}):"
              " every item was already assigned. Add items (`rlhf-lab feedback simulate --store URL --annotators 0 "
              "--items N`) and run `class create` again: new items go to the students with the fewest first")
    if not postgres:
        print(f"no logins written: {store.display_url} is a SQLite file, which has no per-student logins (a class "
              "store on PostgreSQL, e.g. from `rlhf-lab class serve`, gives each student one)")
    elif logins:
        print(f"{len(logins)} student logins written to {args.logins} (mode 600): give each student their own line")
    else:
        print("no new logins: every enrolled student already has one (written by an earlier `class create`)")


def cmd_progress(args) -> None:
    with _open(args.store) as store:
        table = progress(store)
    if args.json:
        print(table.to_json(orient="records", date_format="iso"))
        return
    print(table.to_string(index=False) if len(table) else "no students enrolled yet")
    if len(table):
        print(f"\n{int(table['judged'].sum())} of {int(table['assigned'].sum())} assigned judgments made; "
              f"{int(((table['remaining'] == 0) & (table['assigned'] > 0)).sum())} of {len(table)} students done"
              + (f" ({int((table['assigned'] == 0).sum())} with no items assigned)" if (table['assigned'] == 0).any()
                 else ""))


def cmd_share(args) -> None:
    with _open(args.store) as store:
        n = share_class_pairs(store, args.out)
    print(f"{n} pairwise judgments written to {args.out}, each student under a pseudonym (new with every share): "
          "give the file to your students for you_vs_class(store, me, class_pairs=...)")


def add_class_commands(subparsers):
    """Add `class serve | create | progress | share` to an argparse subparsers object; returns the `class` parser."""
    parser = subparsers.add_parser("class", help="a class store on PostgreSQL: serve, create logins, progress, share")
    sub = parser.add_subparsers(dest="class_command", required=True)

    serve = sub.add_parser("serve", help="start a PostgreSQL server of your own in a folder (initialised once)")
    serve.add_argument("--dir", required=True, help="folder of the server's data (kept between starts)")
    serve.add_argument("--class", dest="class_id", default="rlhf_class", help="the class's database name")
    serve.add_argument("--port", type=int, default=5433)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network card)")
    serve.add_argument("--allow", action="append", default=[],
                       help="a network whose machines may connect, e.g. 10.0.0.0/8 (repeatable)")
    serve.add_argument("--max-connections", type=int, default=400, help="about one per student, plus a few")
    serve.add_argument("--stop", action="store_true", help="stop the server instead")
    serve.set_defaults(func=cmd_serve)

    create = sub.add_parser("create", help="enroll a roster, assign items, write one login per student")
    create.add_argument("--store", required=True, help="the class store's URL (the instructor's)")
    create.add_argument("--roster", required=True, help="CSV with a student_id column (and optionally display_name)")
    create.add_argument("--k", type=int, default=3, help="students per item (for agreement)")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--logins", default="logins.csv", help="where the students' login URLs go (mode 600)")
    create.set_defaults(func=cmd_create)

    prog = sub.add_parser("progress", help="assigned, judged and remaining per student")
    prog.add_argument("--store", required=True)
    prog.add_argument("--json", action="store_true")
    prog.set_defaults(func=cmd_progress)

    share = sub.add_parser("share", help="the class's pairwise judgments under pseudonyms, for students (JSON lines)")
    share.add_argument("--store", required=True, help="the class store's URL (the instructor's)")
    share.add_argument("--out", default="class_pairs.jsonl", help="the file to write (replaced whole)")
    share.set_defaults(func=cmd_share)
    return parser
