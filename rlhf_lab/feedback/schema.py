"""The feedback store's tables (SQLAlchemy Core), its schema version and the migrations between versions.

    responses        one model reply: prompt, text, model, iteration, sampling settings (JSON), eos
    items            one prompt + the responses to judge together; kind pairwise | rating | ranking
    item_responses   which responses an item shows, in display order (A, B, ...)
    judgments        who, when, kind, what (item or response), the answer (JSON) and a free-text comment
    annotators       who judges, when not a person: name, kind (person | simulated | ai) and what they are
    students         a class's roster: student id, display name, database role (empty for one learner)
    assignments      which student judges which item (a class store; none for one learner)
    schema_version   one row; `MIGRATIONS` upgrades an older store when it is opened

Text columns are `LosslessText`: model text is arbitrary, and PostgreSQL refuses the NUL character that SQLite
keeps, so on PostgreSQL NUL (and the escape character itself) is escaped on the way in and restored on the way out.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from rlhf_lab.feedback.database import serialize

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "metadata", "responses_t", "items_t", "item_responses_t", "judgments_t",
           "students_t", "assignments_t", "annotators_t", "schema_version_t", "ANNOTATOR_KINDS", "LosslessText",
           "escape_nul", "unescape_nul", "upgrade_schema"]

SCHEMA_VERSION = 2
_ESC = "\ue000"  # a private-use character: the escape on PostgreSQL
_NEEDS_ESCAPE = re.compile("[\x00\ue000]")
_ESCAPED = re.compile("\ue000(.)", re.S)


def escape_nul(text: str) -> str:
    """NUL → ESC "0" and ESC → ESC ESC (ESC = U+E000), so that `unescape_nul(escape_nul(t)) == t` for every string
    and the result holds no NUL. Text without either character is returned unchanged."""
    return _NEEDS_ESCAPE.sub(lambda m: _ESC + ("0" if m.group() == "\x00" else _ESC), text)


def unescape_nul(text: str) -> str:
    """The inverse of `escape_nul`."""
    if _ESC not in text:
        return text
    return _ESCAPED.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), text)


class LosslessText(sa.types.TypeDecorator):
    """Text that keeps every character on every database: escaped (`escape_nul`) on PostgreSQL only, so SQLite
    stores (and every store written before) read as they always did."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name != "postgresql":
            return value
        return escape_nul(value)

    def process_result_value(self, value, dialect):
        if value is None or dialect.name != "postgresql":
            return value
        return unescape_nul(value)


_JUDGMENT_COLUMNS = "id, annotator, created_at, kind, item_id, response_id, target, answer, comment"


def _to_v2(conn) -> None:
    """Version 2 adds the `annotators` table and the `students` and `assignments` tables of a class store (created
    by `create_all` before the migrations run), and on SQLite rebuilds `judgments` with AUTOINCREMENT, so that the
    id of an undone judgment is never given to the next one (PostgreSQL's sequences never reuse ids). Every judgment
    keeps its id."""
    if conn.dialect.name != "sqlite":
        return
    ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'judgments'").scalar()
    if ddl is None or "AUTOINCREMENT" in ddl.upper():
        return
    conn.exec_driver_sql("ALTER TABLE judgments RENAME TO judgments_v1")
    judgments_t.create(conn)
    conn.exec_driver_sql(f"INSERT INTO judgments ({_JUDGMENT_COLUMNS}) SELECT {_JUDGMENT_COLUMNS} FROM judgments_v1")
    conn.exec_driver_sql("DROP TABLE judgments_v1")


MIGRATIONS: dict = {1: _to_v2}
"""from-version -> function(connection) that upgrades the schema by one version."""

metadata = sa.MetaData()
responses_t = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("prompt", LosslessText, nullable=False),
    sa.Column("text", LosslessText, nullable=False),
    sa.Column("model", LosslessText, nullable=False),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("sampling", sa.Text, nullable=False),
    sa.Column("eos", sa.Boolean, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
items_t = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("prompt", LosslessText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
item_responses_t = sa.Table(
    "item_responses", metadata,
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("response_id", sa.Integer, sa.ForeignKey("responses.id"), nullable=False),
)
judgments_t = sa.Table(
    "judgments", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("annotator", LosslessText, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=True),
    sa.Column("response_id", sa.Integer, sa.ForeignKey("responses.id"), nullable=True),
    sa.Column("target", sa.String(64), nullable=False),  # "item:7", "thumbs:12", "flags:12": one judgment each
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("comment", LosslessText, nullable=False, default=""),
    sa.UniqueConstraint("annotator", "target", name="one_judgment_per_target"),
    sqlite_autoincrement=True,  # an undone judgment's id is never reused
)
ANNOTATOR_KINDS = ("person", "simulated", "ai")
annotators_t = sa.Table(
    "annotators", metadata,
    sa.Column("name", LosslessText, primary_key=True),  # what their judgments carry as `annotator`
    sa.Column("kind", sa.String(20), nullable=False),  # an unregistered annotator is a person
    sa.Column("about", LosslessText, nullable=False, default=""),  # e.g. the judge's model and prompt, a constitution
    sa.Column("created_at", sa.Float, nullable=False),
)
students_t = sa.Table(
    "students", metadata,
    sa.Column("student_id", LosslessText, primary_key=True),  # what their judgments carry as `annotator`
    sa.Column("display_name", LosslessText, nullable=False, default=""),
    sa.Column("db_role", sa.String(63), nullable=True, unique=True),  # their PostgreSQL login role, if any
    sa.Column("created_at", sa.Float, nullable=False),
)
assignments_t = sa.Table(
    "assignments", metadata,
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), primary_key=True),
    sa.Column("student_id", LosslessText, sa.ForeignKey("students.student_id"), primary_key=True),
)
schema_version_t = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))


def upgrade_schema(conn, where: str, read_only: bool = False) -> None:
    """Create a new store's tables and version row; check an existing store's version and upgrade it one version
    at a time (`MIGRATIONS`). A version this rlhf-lab cannot read raises a ValueError naming `where`."""
    if not read_only:
        serialize(conn, "schema")  # kernels opening a new PostgreSQL store at once create its tables one at a time
        metadata.create_all(conn)
    versions = conn.execute(sa.select(schema_version_t.c.version)).scalars().all()
    if not versions and not read_only:
        conn.execute(schema_version_t.insert().values(version=SCHEMA_VERSION))
        return
    if len(versions) != 1:
        raise ValueError(f"{where} has {len(versions)} rows in its schema_version table where a store has one: it "
                         "was edited outside rlhf-lab. Restore it from a copy.")
    version = versions[0]
    if version > SCHEMA_VERSION:
        raise ValueError(f"{where} has schema version {version}; this rlhf-lab reads up to {SCHEMA_VERSION}. "
                         "Upgrade rlhf-lab to open it.")
    if version < SCHEMA_VERSION and read_only:
        raise ValueError(f"{where} has schema version {version} and is read-only, so it cannot be upgraded to "
                         f"{SCHEMA_VERSION}: copy it somewhere writable and open the copy.")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise ValueError(f"{where} has schema version {version}, which no rlhf-lab wrote (stores start at "
                             "version 1): it was edited outside rlhf-lab. Restore it from a copy.")
        MIGRATIONS[version](conn)
        version += 1
        conn.execute(schema_version_t.update().values(version=version))
