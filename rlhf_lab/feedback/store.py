"""The feedback store: every judgment a learner (or a simulated annotator) makes, committed at once.

A store is a database named by a path (an SQLite file the learner can copy) or by a SQLAlchemy URL
(`sqlite:///...`, `postgresql://...`); its tables are in `feedback.schema`, the records it returns in
`feedback.records` (read from the rows by `feedback.rows`), each kind of answer's checks in `feedback.answers`,
and exporting/importing preference files in `feedback.exchange`.

One transaction per judgment. On SQLite the store runs in WAL mode with a busy timeout and takes the write lock at
the start of each write (`BEGIN IMMEDIATE`), so several kernels or processes can record into one file at once.
Every `record_*` validates inside its transaction: bad input raises a `ValueError` that says how to fix it, and
nothing is written. An annotator judges an item (or thumbs/flags a response) once; `undo_last` removes their latest
judgment and `replace=True` swaps an existing one in the same transaction. A SQLite file this process may not
write opens read-only: it can be read, and a write raises PermissionError.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, ProgrammingError

from rlhf_lab.core.inputs import is_whole, whole_number
from rlhf_lab.core.script import hide_password
from rlhf_lab.feedback import exchange
from rlhf_lab.feedback.answers import flags_answer, pairwise_answer, ranking_answer, rating_answer, thumbs_answer
from rlhf_lab.feedback.database import (
    cannot_open,
    configure_sqlite,
    no_store,
    read_only_url,
    refuse_foreign_sqlite,
    refuse_missing_store,
    serialize,
    store_url,
)
from rlhf_lab.feedback.preferences import judgments_to_pairs
from rlhf_lab.feedback.records import CHOICES, ITEM_KINDS, Item, Response
from rlhf_lab.feedback.rows import judgments_frame, read_items, read_responses
from rlhf_lab.feedback.schema import (
    ANNOTATOR_KINDS,
    annotators_t,
    assignments_t,
    item_responses_t,
    items_t,
    judgments_t,
    responses_t,
    schema_version_t,
    upgrade_schema,
)
from rlhf_lab.feedback.validation import as_list, response_row

__all__ = ["FeedbackStore"]


class FeedbackStore:
    """A durable store of responses, items and judgments. See the module docstring."""

    def __init__(self, where: str | Path = "runs/feedback.db", busy_timeout_s: float = 60.0, create: bool = True):
        """Open the store at `where` (a path or URL), making it (tables, a path's folders) if it is new; with
        `create=False` (a command that only reads) a store that is not there yet is refused: FileNotFoundError."""
        self.url = store_url(where, make_folders=create)
        refuse_foreign_sqlite(self.url)
        if not create:
            refuse_missing_store(self.url, hide_password(where))
        read_only = read_only_url(self.url)  # a file we may not write opens read-only: readable, writes refused
        self.read_only = read_only is not None
        kwargs = {} if self.url.startswith("sqlite") else {"pool_pre_ping": True}  # a dropped connection: a new one
        if self.url == "sqlite://":
            kwargs = {"poolclass": sa.pool.StaticPool, "connect_args": {"check_same_thread": False}}
        try:
            self.engine = sa.create_engine(read_only or self.url, **kwargs)
        except sa.exc.ArgumentError as err:
            raise ValueError(hide_password(f"{where} is neither a store path nor a database URL this machine can open "
                                           f"({err}); give a file path, sqlite:///path or postgresql+psycopg://..."))\
                from None
        if self.engine.dialect.name == "sqlite":
            configure_sqlite(self.engine, busy_timeout_s, self.read_only)
        try:
            with self._read() if self.read_only else self.transaction() as conn:  # create, check or upgrade the schema
                if not create and not sa.inspect(conn).has_table(schema_version_t.name):
                    raise no_store(self.display_url)  # e.g. an empty PostgreSQL database: no tables made in it
                upgrade_schema(conn, self.display_url, self.read_only)
        except sa.exc.OperationalError as err:  # no server, a bad password, a folder that is not there
            self.engine.dispose()
            raise cannot_open(err, self.display_url, self.engine.dialect.name) from None
        except BaseException:
            self.engine.dispose()
            raise

    # ---- plumbing: connections, transactions, schema -------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self):
        """One write transaction (a SQLAlchemy connection): committed on success, rolled back (nothing written) on
        any exception."""
        if self.read_only:
            raise PermissionError(f"{self.url[len('sqlite:///'):]} is read-only to you: it can be read, not written")
        with self.engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _read(self):
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(schema_version_t.c.version)).scalar_one()

    def close(self) -> None:
        """Release the database connections (the store can be reopened with the same path)."""
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def display_url(self) -> str:
        """The store's URL with any password hidden (for messages and logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"FeedbackStore({self.display_url!r})"

    # ---- responses and items --------------------------------------------------------------------------------------
    def add_responses(self, records: list[dict]) -> list[int]:
        """Add replies (dicts with prompt, response, model, iteration, sampling, optional eos); returns their ids."""
        rows = [dict(response_row(r, i), created_at=time.time()) for i, r in enumerate(records)]
        with self.transaction() as conn:
            return self._insert_responses(conn, rows)

    def add_response_groups(self, records: list[dict], size: int = 2, kind: str = "pairwise") -> list[int]:
        """Add replies and make each `size` consecutive ones an item, all in one transaction: a kill half-way leaves
        neither replies without items nor a partial set of items. Returns the item ids."""
        if whole_number(size, "size") < 1:
            raise ValueError(f"size must be at least 1 (replies per item), got {size}")
        rows = [dict(response_row(r, i), created_at=time.time()) for i, r in enumerate(records)]
        with self.transaction() as conn:
            ids = self._insert_responses(conn, rows)
            return self._insert_items(conn, [ids[i:i + size] for i in range(0, len(ids), size)], kind)

    @staticmethod
    def _insert_responses(conn, rows: list[dict]) -> list[int]:
        return [conn.execute(responses_t.insert().values(**dict(row, sampling=json.dumps(row["sampling"])))
                             ).inserted_primary_key[0] for row in rows]

    def add_item(self, response_ids: list[int], kind: str = "pairwise") -> int:
        """Group responses to one prompt into an item to judge; returns the item id."""
        return self.add_items([response_ids], kind)[0]

    def add_items(self, groups: list[list[int]], kind: str = "pairwise") -> list[int]:
        """`add_item` for many groups in one transaction: all the items are created or none (a crash half-way
        leaves no partial set for a resumed run to mistake for a whole one). Returns the item ids."""
        groups = [[whole_number(r, "a response id") for r in as_list(ids, "each group of response ids")]
                  for ids in as_list(groups, "groups")]
        with self.transaction() as conn:
            return self._insert_items(conn, groups, kind)

    def _insert_items(self, conn, groups: list[list[int]], kind: str) -> list[int]:
        if kind not in ITEM_KINDS:
            raise ValueError(f"kind must be one of {ITEM_KINDS}, got {kind!r}")
        need = {"pairwise": "exactly 2", "rating": "1 or more", "ranking": "at least 2"}[kind]
        found, item_ids = read_responses(conn, {r for ids in groups for r in ids}), []
        for ids in groups:
            k = len(ids)
            if (kind == "pairwise" and k != 2) or (kind == "ranking" and k < 2) or k < 1:
                raise ValueError(f"a {kind} item needs {need} responses, got {k}")
            if len(set(ids)) != k:
                raise ValueError(f"response ids repeat in {ids}; list each response once")
            unknown = [r for r in ids if r not in found]
            if unknown:
                raise ValueError(f"unknown response ids {unknown}; add them with add_responses first")
            prompts = {found[r].prompt for r in ids}
            if len(prompts) != 1:
                raise ValueError(f"all responses of an item must answer one prompt, got {len(prompts)} prompts")
            item_id = conn.execute(items_t.insert().values(kind=kind, prompt=prompts.pop(), created_at=time.time())
                                   ).inserted_primary_key[0]
            conn.execute(item_responses_t.insert(), [dict(item_id=item_id, position=i, response_id=r)
                                                     for i, r in enumerate(ids)])
            item_ids.append(item_id)
        return item_ids

    def get_item(self, item_id: int) -> Item:
        with self._read() as conn:
            found = read_items(conn, items_t.c.id == whole_number(item_id, "item id"))
        if not found:
            raise ValueError(f"unknown item id {item_id}; see store.items() for the ids there are")
        return found[0]

    def get_response(self, response_id: int) -> Response:
        with self._read() as conn:
            found = read_responses(conn, [whole_number(response_id, "response id")])
        if not found:
            raise ValueError(f"unknown response id {response_id}; add it with add_responses first")
        return found[int(response_id)]

    def items(self, kind: str | None = None, iteration: int | None = None) -> list[Item]:
        """All items in insertion order, optionally of one kind and/or whose newest response is from `iteration`."""
        if kind is not None and kind not in ITEM_KINDS:
            raise ValueError(f"kind must be one of {ITEM_KINDS} (or None: every kind), got {kind!r}")
        if iteration is not None and not is_whole(iteration):
            raise TypeError(f"iteration must be a whole number such as 0 (or None: every iteration), got {iteration!r}")
        with self._read() as conn:
            found = read_items(conn, None if kind is None else items_t.c.kind == kind)
        return [it for it in found if iteration is None or it.iteration == iteration]

    def pending_items(self, annotator: str, kind: str | None = None) -> list[Item]:
        """Items `annotator` has not judged yet, in insertion order (a restarted kernel resumes here). In a class
        store where items were assigned to `annotator` (`classroom.assign_items`), only those."""
        judged = sa.select(judgments_t.c.item_id).where(judgments_t.c.annotator == annotator,
                                                        judgments_t.c.item_id.is_not(None))
        where = items_t.c.id.not_in(judged)
        mine = sa.select(assignments_t.c.item_id).where(assignments_t.c.student_id == annotator)
        with self._read() as conn:
            if conn.execute(mine.limit(1)).first() is not None:
                where = sa.and_(where, items_t.c.id.in_(mine))
        if kind is not None:
            where = sa.and_(where, items_t.c.kind == kind)
        with self._read() as conn:
            return read_items(conn, where)

    def judged_targets(self, annotator: str) -> set[str]:
        """What `annotator` has judged, as target keys: "item:7", "thumbs:12", "flags:12"."""
        with self._read() as conn:
            return set(conn.execute(sa.select(judgments_t.c.target).where(judgments_t.c.annotator == annotator))
                       .scalars())

    def judgment(self, annotator: str, target: str) -> dict | None:
        """`annotator`'s judgment of `target` ("item:7", "thumbs:12", "flags:12") as {"id", "kind", "answer",
        "comment"}, or None when they have not judged it."""
        with self._read() as conn:
            row = conn.execute(sa.select(judgments_t).where(judgments_t.c.annotator == annotator,
                                                            judgments_t.c.target == str(target))).first()
        return None if row is None else dict(id=row.id, kind=row.kind, answer=json.loads(row.answer),
                                             comment=row.comment)

    # ---- judgments ------------------------------------------------------------------------------------------------
    def _record(self, annotator, kind, answer, *, item_id=None, response_id=None, comment="", replace=False,
                check=None) -> int:
        """Validate and insert one judgment in one transaction; `check(item_or_response)` validates the answer."""
        if not isinstance(annotator, str) or not annotator.strip():
            raise ValueError("annotator must be a non-empty string such as 'alice' (who made this judgment?)")
        if not isinstance(comment, str):
            raise ValueError("comment must be a string (use '' for none)")
        with self.transaction() as conn:
            if item_id is not None:
                found = read_items(conn, items_t.c.id == whole_number(item_id, "item id"))
                if not found:
                    raise ValueError(f"unknown item id {item_id!r}; see store.items() or store.pending_items()")
                target, subject = f"item:{int(item_id)}", found[0]
            else:
                found = read_responses(conn, [whole_number(response_id, "response id")])
                if not found:
                    raise ValueError(f"unknown response id {response_id!r}; add it with add_responses first")
                target, subject = f"{kind}:{int(response_id)}", found[int(response_id)]
            if check is not None:
                answer = check(subject) or answer
            serialize(conn, f"judgment {target} {annotator}")  # a second click waits, then reads the first one
            mine = sa.and_(judgments_t.c.annotator == annotator, judgments_t.c.target == target)
            existing = conn.execute(sa.select(judgments_t.c.id).where(mine)).scalar()
            if existing is not None and not replace:
                raise ValueError(f"{annotator!r} already judged {target} (judgment {existing}); call "
                                 "store.undo_last(annotator) or pass replace=True to change it")
            if existing is not None:
                conn.execute(judgments_t.delete().where(judgments_t.c.id == existing))
            try:
                return conn.execute(judgments_t.insert().values(
                    annotator=annotator, created_at=time.time(), kind=kind, target=target, answer=json.dumps(answer),
                    comment=comment, item_id=None if item_id is None else int(item_id),
                    response_id=None if response_id is None else int(response_id))).inserted_primary_key[0]
            except IntegrityError as err:  # a concurrent writer got there first (PostgreSQL without a lock)
                raise ValueError(f"{annotator!r} already judged {target}; use undo_last or replace=True") from err
            except ProgrammingError as err:  # a class store's row-level security: a student writes as themselves
                if "row-level security" not in str(err):
                    raise
                raise PermissionError(f"this connection may only record its own student's judgments, not "
                                      f"{annotator!r}'s: pass your own student id as annotator") from None

    def record_pairwise(self, item_id: int, annotator: str, choice: str, strength: int | None = None,
                        comment: str = "", replace: bool = False) -> int:
        """Record a preference between an item's two responses: choice A | B | tie | both_bad, strength None or 1..3."""
        answer, check = pairwise_answer(choice, strength)
        return self._record(annotator, "pairwise", answer, item_id=item_id, comment=comment, replace=replace,
                            check=check)

    def record_rating(self, item_id: int, annotator: str, scores, scale: tuple[int, int] = (1, 7),
                      comment: str = "", replace: bool = False) -> int:
        """Record Likert scores on `scale` (inclusive), one per response of the item (an int for a 1-response item)."""
        answer, check = rating_answer(scores, scale)
        return self._record(annotator, "rating", answer, item_id=item_id, comment=comment, replace=replace,
                            check=check)

    def record_ranking(self, item_id: int, annotator: str, order: list[int], comment: str = "",
                       replace: bool = False) -> int:
        """Record a ranking: `order` lists the item's response ids, best first (a permutation of them)."""
        answer, check = ranking_answer(order)
        return self._record(annotator, "ranking", answer, item_id=item_id, comment=comment, replace=replace,
                            check=check)

    def record_thumbs(self, response_id: int, annotator: str, up: bool, comment: str = "",
                      replace: bool = False) -> int:
        """Record a thumbs up (True) or down (False) on one response."""
        answer, _ = thumbs_answer(up)
        return self._record(annotator, "thumbs", answer, response_id=response_id, comment=comment, replace=replace)

    def record_flags(self, response_id: int, annotator: str, flags, comment: str = "",
                     replace: bool = False) -> int:
        """Record flags (a subset of FLAGS, possibly empty: checked and fine) and a comment on one response."""
        answer, _ = flags_answer(flags)
        return self._record(annotator, "flags", answer, response_id=response_id, comment=comment, replace=replace)

    def undo_last(self, annotator: str, item_ids=None, targets=None, kind: str | None = None,
                  judgment_ids=None) -> int | None:
        """Delete `annotator`'s most recent judgment; returns its id (None when they have none). item_ids: only a
        judgment of one of these items counts (a rater's undo: never a flag or a judgment made elsewhere); targets:
        only one of these target keys ("thumbs:12", as `judged_targets` lists them); kind: only a judgment of this
        kind ("rating": never a pairwise judgment of the same item); judgment_ids: only one of these judgments."""
        where = judgments_t.c.annotator == annotator
        if item_ids is not None:
            where = sa.and_(where, judgments_t.c.item_id.in_([int(i) for i in item_ids]))
        if targets is not None:
            where = sa.and_(where, judgments_t.c.target.in_([str(t) for t in targets]))
        if kind is not None:
            where = sa.and_(where, judgments_t.c.kind == kind)
        if judgment_ids is not None:
            where = sa.and_(where, judgments_t.c.id.in_([int(i) for i in judgment_ids]))
        with self.transaction() as conn:
            last = conn.execute(sa.select(sa.func.max(judgments_t.c.id)).where(where)).scalar()
            if last is not None:
                conn.execute(judgments_t.delete().where(judgments_t.c.id == last))
            return last

    # ---- who judges ------------------------------------------------------------------------------------------------
    def register_annotator(self, name: str, kind: str, about: str = "") -> None:
        """Say what an annotator is: "person" (the default for anyone not registered), "simulated" (a scripted
        crowd or learner) or "ai" (an AI judge; `about` names its model, prompt or constitution). Registering the
        same name again updates it. `judgments_df()` then carries each judgment's `annotator_kind`."""
        if kind not in ANNOTATOR_KINDS:
            raise ValueError(f"kind must be one of {ANNOTATOR_KINDS}, got {kind!r}")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("name must be a non-empty string (the annotator's name in the store)")
        with self.transaction() as conn:
            serialize(conn, f"annotator {name}")  # two kernels registering one name: the second updates it
            exists = conn.execute(sa.select(annotators_t.c.name).where(annotators_t.c.name == name)).first()
            values = dict(kind=kind, about=str(about))
            if exists:
                conn.execute(annotators_t.update().where(annotators_t.c.name == name).values(**values))
            else:
                conn.execute(annotators_t.insert().values(name=name, created_at=time.time(), **values))

    def annotator_kinds(self) -> dict[str, str]:
        """Registered annotators' kinds, name -> kind (anyone else is a person)."""
        with self._read() as conn:
            return dict(conn.execute(sa.select(annotators_t.c.name, annotators_t.c.kind)).all())

    # ---- queries ---------------------------------------------------------------------------------------------------
    def judgments_df(self) -> pd.DataFrame:
        """One row per judgment: who, when, kind, item, prompt, response ids and texts, answer, iteration, model,
        and the annotator's kind (see `feedback.rows.judgments_frame`)."""
        kinds = self.annotator_kinds()
        with self._read() as conn:
            return judgments_frame(conn, kinds)

    def preference_pairs(self, include_ties: bool = True) -> pd.DataFrame:
        """Judgments as (chosen, rejected) pairs; see `rlhf_lab.preferences.judgments_to_pairs`."""
        with self._read() as conn:
            rows = conn.execute(sa.select(judgments_t).order_by(judgments_t.c.id)).all()
            items = {it.id: it for it in read_items(conn)}
        return judgments_to_pairs(rows, items, include_ties=include_ties)

    def counts(self) -> dict:
        """Judgment counts by kind, annotator, iteration and pairwise choice, plus the grand total under `total`."""
        df = self.judgments_df()
        choices = [a["choice"] for a in df.loc[df["kind"] == "pairwise", "answer"]]
        return {
            "total": int(len(df)),
            "by_kind": {str(k): int(v) for k, v in df["kind"].value_counts().sort_index().items()},
            "by_annotator": {str(k): int(v) for k, v in df["annotator"].value_counts().sort_index().items()},
            "by_iteration": {int(k): int(v) for k, v in df["iteration"].value_counts().sort_index().items()},
            "pairwise_choices": {c: choices.count(c) for c in CHOICES},
            "responses": self._count(responses_t),
            "items": self._count(items_t),
        }

    def _count(self, table) -> int:
        with self._read() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

    # ---- export / import (feedback.exchange) -------------------------------------------------------------------
    def export_jsonl(self, path: str | Path, include_ties: bool = False) -> int:
        """Write preference pairs as JSON lines (see `exchange.export_jsonl`); returns the number written."""
        return exchange.export_jsonl(self, path, include_ties)

    def import_jsonl(self, path: str | Path, annotator: str = "imported", model: str = "imported",
                     iteration: int = 0) -> int:
        """Read preference pairs as pairwise judgments in one transaction (see `exchange.import_jsonl`)."""
        return exchange.import_jsonl(self, path, annotator, model, iteration)

    def export_csv(self, path: str | Path, what: str = "judgments") -> int:
        """Write all judgments (or, with what="pairs", the preference pairs) as CSV; a text that starts with
        = + - @ gets a leading ' so a spreadsheet never runs it as a formula (see `exchange.export_csv`)."""
        return exchange.export_csv(self, path, what)
