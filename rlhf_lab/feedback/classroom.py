"""A class store: one feedback store a whole class rates into, with a roster, items assigned to students, progress
per student and, on PostgreSQL, one login per student that can write only that student's judgments.

    store = FeedbackStore("postgresql+psycopg://teacher:...@db.campus:5432/cs329")    # the instructor
    enroll(store, ["s001", "s002", ...])             # or a roster CSV with student_id[, display_name]
    assign_items(store, k=3, seed=0)                 # each item judged by 3 students, spread evenly
    logins = secure_class(store)                     # {student id: their own URL}; hand each student theirs
    progress(store)                                  # assigned / judged / remaining per student
    share_class_pairs(store, "class_pairs.jsonl")    # the class's pairwise judgments, pseudonymous, for students

    store = FeedbackStore(logins["s001"])            # a student: sees and judges the items assigned to them
    store.pending_items(whoami(store))

Per-student access is the database's job, not the notebook's: `secure_class` gives each student a login role in a
group role of the class, grants it read access to the replies and items and insert/delete on judgments, and turns
on row-level security so that every row a student's connection reads, inserts or deletes in `judgments`, `students`
and `assignments` is their own. A student's code cannot get round it (the server checks each row); the instructor's
(owner's) connection sees everything. So a student's login cannot fit the class's model; `share_class_pairs` is how
the instructor hands the class's judgments to the students without their names (`read_class_pairs` reads the file
back; `loop.class_model.you_vs_class(store, me, class_pairs=...)` uses it).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import re
import secrets
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from rlhf_lab.core.files import write_atomic
from rlhf_lab.feedback.database import serialize
from rlhf_lab.feedback.exchange import file_to_write
from rlhf_lab.feedback.schema import assignments_t, items_t, judgments_t, students_t

__all__ = ["read_roster", "enroll", "roster", "assign_items", "progress", "secure_class", "whoami", "class_overview",
           "share_class_pairs", "read_class_pairs", "CLASS_PAIR_COLUMNS"]

_ROLE_SAFE = re.compile(r"[^a-z0-9_]+")


def read_roster(students) -> list[tuple[str, str]]:
    """(student_id, display_name) pairs from a list of ids, of (id, name) pairs, a DataFrame or a CSV path."""
    if isinstance(students, (str, Path)):
        path = Path(students)
        if not path.is_file():
            raise ValueError(f"roster {path} not found: give a CSV with a student_id column (and optionally "
                             "display_name), or a list of student ids")
        students = pd.read_csv(path, dtype=str, keep_default_na=False)
    if isinstance(students, pd.DataFrame):
        if "student_id" not in students.columns:
            raise ValueError(f"the roster needs a student_id column; it has {list(students.columns)}")
        names = students["display_name"] if "display_name" in students.columns else [""] * len(students)
        return [(str(s).strip(), str(n)) for s, n in zip(students["student_id"], names)]
    out = []
    for entry in students:
        sid, name = (entry, "") if isinstance(entry, str) else tuple(entry)
        out.append((str(sid).strip(), str(name)))
    return out


def enroll(store, students) -> int:
    """Add students to the class roster (ids already there are kept as they are); returns how many were new.
    A student id is what their judgments carry as `annotator`."""
    pairs = read_roster(students)
    ids = [s for s, _ in pairs]
    bad = [s for s in ids if not s or len(s) > 200 or "\x00" in s]
    if bad:
        raise ValueError(f"student ids must be non-empty text of at most 200 characters; fix {bad[:3]}")
    repeated = sorted({s for s in ids if ids.count(s) > 1})
    if repeated:
        raise ValueError(f"student ids repeat in the roster: {repeated[:5]}; list each student once")
    with store.transaction() as conn:
        serialize(conn, "roster")  # two instructors (or TAs) enrolling at once: the second sees the first's students
        known = set(conn.execute(sa.select(students_t.c.student_id)).scalars())
        new = [dict(student_id=s, display_name=n, created_at=time.time()) for s, n in pairs if s not in known]
        if new:
            conn.execute(students_t.insert(), new)
    return len(new)


def roster(store) -> pd.DataFrame:
    """The class roster: student_id, display_name, db_role (None until `secure_class`)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(students_t).order_by(students_t.c.student_id)).all()
    return pd.DataFrame([dict(r._mapping) for r in rows], columns=["student_id", "display_name", "db_role",
                                                                    "created_at"])


def assign_items(store, k: int = 3, item_ids=None, seed: int = 0) -> pd.DataFrame:
    """Give each item not yet assigned (or each of `item_ids`) to `k` different students, spread evenly: each item
    goes to the students with the fewest items so far, so every student gets the same number, give or take one
    (students enrolled later get the new items first). Items already assigned keep their students. Returns
    the new assignments (item_id, student_id). A student's `pending_items` then lists only their items."""
    with store.transaction() as conn:
        serialize(conn, "assignments")  # two assigning at once: the second sees what the first assigned
        students = sorted(conn.execute(sa.select(students_t.c.student_id)).scalars())
        if not students:
            raise ValueError("the class has no students yet: enroll(store, roster) first")
        if not 1 <= int(k) <= len(students):
            raise ValueError(f"k must be from 1 to the number of students ({len(students)}), got {k}")
        assigned = set(conn.execute(sa.select(assignments_t.c.item_id)).scalars())
        every = list(conn.execute(sa.select(items_t.c.id).order_by(items_t.c.id)).scalars())
        wanted = every if item_ids is None else [int(i) for i in item_ids]
        unknown = sorted(set(wanted) - set(every))
        if unknown:
            raise ValueError(f"unknown item ids {unknown[:5]}; see store.items()")
        todo = [i for i in wanted if i not in assigned]
        load = Counter(conn.execute(sa.select(assignments_t.c.student_id)).scalars())
        # each item goes to the k students with the fewest items so far (ties in a seeded order): a student enrolled
        # after the first assignment gets the next new items first
        queue = [(load[students[j]], rank, students[j])
                 for rank, j in enumerate(np.random.default_rng(seed).permutation(len(students)))]
        heapq.heapify(queue)
        rows = []
        for item in todo:
            taken = [heapq.heappop(queue) for _ in range(int(k))]
            rows += [dict(item_id=item, student_id=sid) for _, _, sid in taken]
            for count, rank, sid in taken:
                heapq.heappush(queue, (count + 1, rank, sid))
        if rows:
            conn.execute(assignments_t.insert(), rows)
    return pd.DataFrame(rows, columns=["item_id", "student_id"])


def progress(store) -> pd.DataFrame:
    """Per student: assigned, judged (of their assigned items), remaining, all judgments they made, and when they
    last judged (UTC). The instructor's view; students who never judged show zeros."""
    with store.engine.connect() as conn:
        students = conn.execute(sa.select(students_t.c.student_id, students_t.c.display_name)).all()
        assigned = conn.execute(sa.select(assignments_t.c.student_id, assignments_t.c.item_id)).all()
        judged = conn.execute(sa.select(judgments_t.c.annotator, judgments_t.c.item_id,
                                        judgments_t.c.created_at)).all()
    done = {(a, i) for a, i, _ in judged}
    rows = []
    for sid, name in sorted(students):
        mine = [i for s, i in assigned if s == sid]
        theirs = [t for a, _, t in judged if a == sid]
        n_done = sum((sid, i) in done for i in mine)
        rows.append(dict(student_id=sid, display_name=name, assigned=len(mine), judged=n_done,
                         remaining=len(mine) - n_done, judgments=len(theirs),
                         last_judgment=pd.to_datetime(max(theirs), unit="s", utc=True) if theirs else pd.NaT))
    return pd.DataFrame(rows, columns=["student_id", "display_name", "assigned", "judged", "remaining",
                                       "judgments", "last_judgment"])


def _role_name(database: str, student_id: str) -> str:
    base = _ROLE_SAFE.sub("_", student_id.lower()).strip("_")[:24] or "student"
    digest = hashlib.sha256(f"{database}\x00{student_id}".encode()).hexdigest()[:8]
    return f"s_{_ROLE_SAFE.sub('_', database.lower())[:20]}_{base}_{digest}"


def secure_class(store, reset_passwords: bool = False, keep=None) -> dict[str, str]:
    """PostgreSQL only: a login role per enrolled student (created once; `reset_passwords` gives every student a
    new password), in a group role of this class, and row-level security so that each login reads and writes only
    its own student's judgments. Returns {student id: that student's URL} for the students given a (new) password
    this time; keep it private (each URL holds a password). Run it again after enrolling more students.
    `keep(urls)` is called with the same dict before the passwords are committed: write them down there, since a
    password committed but not written is lost for good; if `keep` raises, no role or password changes."""
    if store.engine.dialect.name != "postgresql":
        raise ValueError("secure_class needs a PostgreSQL class store (a SQLite file has no logins); open the store "
                         "with a postgresql+psycopg:// URL")
    url = store.engine.url
    database = url.database
    group = f"g_{_ROLE_SAFE.sub('_', database.lower())[:40]}_students"
    student_of_me = "(SELECT s.student_id FROM students s WHERE s.db_role = current_user)"
    out = {}
    with store.transaction() as conn:
        def sql(text, *args):
            return conn.exec_driver_sql(text, *args)

        if sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)).scalar() is None:
            sql(f'CREATE ROLE "{group}" NOLOGIN')
        sql(f'REVOKE CONNECT ON DATABASE "{database}" FROM PUBLIC')
        sql(f'GRANT CONNECT ON DATABASE "{database}" TO "{group}"')
        sql(f'GRANT USAGE ON SCHEMA public TO "{group}"')
        sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL <= 14 lets every role create objects there
        sql(f'GRANT SELECT ON responses, items, item_responses, schema_version, students, assignments TO "{group}"')
        sql(f'GRANT SELECT, INSERT, DELETE ON judgments TO "{group}"')
        sql(f'GRANT SELECT, INSERT, UPDATE ON annotators TO "{group}"')  # their own name only (the policy below)
        sequence = sql("SELECT pg_get_serial_sequence('judgments', 'id')").scalar()
        sql(f'GRANT USAGE ON SEQUENCE {sequence} TO "{group}"')
        for table, own in (("judgments", f"annotator = {student_of_me}"), ("students", "db_role = current_user"),
                           ("assignments", f"student_id = {student_of_me}"), ("annotators", f"name = {student_of_me}")):
            sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            sql(f"DROP POLICY IF EXISTS own_rows ON {table}")
            sql(f'CREATE POLICY own_rows ON {table} TO "{group}" USING ({own}) WITH CHECK ({own})')
        for sid, role in conn.execute(sa.select(students_t.c.student_id, students_t.c.db_role)).all():
            password = secrets.token_urlsafe(18)  # [A-Za-z0-9_-]: safe inside the quoted DDL literal
            if role is None:
                role = _role_name(database, sid)
                if sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).scalar() is None:
                    sql(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' IN ROLE \"{group}\"")
                else:
                    sql(f"ALTER ROLE \"{role}\" LOGIN PASSWORD '{password}'")
                conn.execute(students_t.update().where(students_t.c.student_id == sid).values(db_role=role))
            elif reset_passwords:
                sql(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
            else:
                continue
            out[sid] = url.set(username=role, password=password).render_as_string(hide_password=False)
        if keep is not None and out:
            keep(out)
    return out


def whoami(store) -> str | None:
    """The student id of a student's connection (from `secure_class`'s URL); None for the instructor or SQLite."""
    if store.engine.dialect.name != "postgresql":
        return None
    with store.engine.connect() as conn:
        return conn.execute(sa.select(students_t.c.student_id)
                            .where(students_t.c.db_role == sa.func.current_user())).scalar()


CLASS_PAIR_COLUMNS = ["prompt", "chosen", "rejected", "chosen_id", "rejected_id", "item_id", "tie", "judgment_id",
                      "annotator"]
"""One line of `share_class_pairs`'s file; `annotator` is a pseudonym, "classmate-" and 8 hex digits."""


def share_class_pairs(store, path: str | Path) -> int:
    """The instructor's (owner's) connection only: write the class's pairwise judgments, ties included (`tie`), as
    JSON lines (CLASS_PAIR_COLUMNS), one per judgment, for students, whose own logins read only their own
    judgments, to fit the class's model from (`you_vs_class(store, me, class_pairs=path)`). `annotator` is a
    pseudonym, "classmate-" and 8 hex digits of an HMAC-SHA256 keyed by a random secret made for this export and
    never written: one classmate's judgments share a pseudonym, which says nothing of who they are, and differs
    from one export to the next. Written atomically; a folder or a SQLite database at `path` is refused. Returns the
    number of lines."""
    student = whoami(store)
    if student is not None:
        raise ValueError(f"this is the login of student {student!r}, which reads only their own judgments: the "
                         "class's pairs are shared from the instructor's URL (the class store's owner)")
    path = file_to_write(path, "class_pairs.jsonl")
    pairs = store.preference_pairs(include_ties=True)
    pairs = pairs[pairs["source_kind"] == "pairwise"]
    with store.engine.connect() as conn:  # each judgment's item: the ids alone, not the judgments table's texts
        item_of = dict(conn.execute(sa.select(judgments_t.c.id, judgments_t.c.item_id)).all())
    secret = secrets.token_bytes(32)

    def pseudonym(name: str) -> str:
        return "classmate-" + hmac.new(secret, str(name).encode(), hashlib.sha256).hexdigest()[:8]

    lines = [json.dumps(dict(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, chosen_id=int(p.chosen_id),
                             rejected_id=int(p.rejected_id), item_id=int(item_of[int(p.judgment_id)]),
                             tie=bool(p.tie), judgment_id=int(p.judgment_id), annotator=pseudonym(p.annotator)),
                        ensure_ascii=False) + "\n" for p in pairs.itertuples()]
    write_atomic(path, "".join(lines))  # a crash leaves the previous file whole
    return len(lines)


def read_class_pairs(data) -> pd.DataFrame:
    """The rows of a `share_class_pairs` file (its path) or of a DataFrame of them, checked: CLASS_PAIR_COLUMNS."""
    if isinstance(data, pd.DataFrame):
        df = data.copy()
    else:
        path = Path(data)
        fix = "give the file your instructor shared (rlhf-lab class share --store URL --out class_pairs.jsonl)"
        if not path.is_file():
            raise ValueError(f"class_pairs {path} is {'a folder' if path.is_dir() else 'not there'}: {fix}")
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as err:
                raise ValueError(f"class_pairs {path} line {n} is not JSON ({err.msg}); {fix}") from None
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=CLASS_PAIR_COLUMNS)  # a class yet to judge
    missing = [c for c in CLASS_PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"class_pairs lacks {missing}: it is not a file of `rlhf-lab class share`")
    return df.astype({"item_id": int, "chosen_id": int, "rejected_id": int, "judgment_id": int, "tie": bool})


def class_overview(store, suspect_threshold: float = 0.15, fast_s: float = 2.0) -> dict:
    """What an instructor watches while a class rates (the dashboard's figures), from the store alone:

    - `totals`: students, items, assigned, judged (of the assigned), all judgments, students done;
    - `progress`: `progress(store)`;
    - `agreement`: per item group (the items' iteration and model): items judged by 2 or more students, Fleiss'
      κ and Krippendorff's α (nominal) of the pairwise choices;
    - `raters`: per student with pairwise judgments: how often they side with the others' majority, mean Cohen's
      κ, the median seconds between their judgments, and a `flag` in words: "often against the others' majority"
      (careless or adversarial?: agreement more than `suspect_threshold` below the class median) and/or "very fast"
      (median under `fast_s` seconds).
    """
    from rlhf_lab.feedback.agreement import annotator_report, panel_agreement

    table = progress(store)
    df = store.judgments_df()
    pairwise = df[df["kind"] == "pairwise"]
    totals = dict(students=len(table), items=store.counts()["items"], assigned=int(table["assigned"].sum()),
                  judged=int(table["judged"].sum()), judgments=int(len(df)),
                  done=int(((table["remaining"] == 0) & (table["assigned"] > 0)).sum()))
    groups = []
    for (iteration, model), part in pairwise.groupby(["iteration", "model"]):
        shared = part.groupby("item_id")["annotator"].nunique()
        figures = panel_agreement(part[part["item_id"].isin(shared[shared >= 2].index)], "pairwise")
        groups.append(dict(group=f"iteration {iteration} · {model}", items=int(part["item_id"].nunique()),
                           items_shared=int((shared >= 2).sum()), judgments=int(len(part)),
                           fleiss_kappa=figures["fleiss_kappa"], krippendorff_alpha=figures["krippendorff_alpha"]))
    agreement = pd.DataFrame(groups, columns=["group", "items", "items_shared", "judgments", "fleiss_kappa",
                                              "krippendorff_alpha"])
    raters = pd.DataFrame(columns=["annotator", "n_judgments", "majority_agreement", "mean_kappa",
                                   "median_seconds_between", "flag"])
    if len(pairwise):
        report = annotator_report(pairwise, threshold=suspect_threshold).reset_index()
        gaps = (pairwise.sort_values("timestamp").groupby("annotator")["timestamp"]
                .apply(lambda t: t.diff().dt.total_seconds().median()))
        report["median_seconds_between"] = report["annotator"].map(gaps)
        flags = []
        for r in report.itertuples():
            words = (["often against the others' majority"] if r.suspect else []) + \
                (["very fast"] if r.median_seconds_between < fast_s else [])
            flags.append(", ".join(words))
        report["flag"] = flags
        raters = report[list(raters.columns)]
    return dict(totals=totals, progress=table, agreement=agreement, raters=raters)
