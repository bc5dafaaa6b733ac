"""The feedback store's tables (SQLAlchemy Core), its schema version and the migrations between versions.

    responses        one model reply: prompt, text, model, iteration, sampling settings (JSON), eos
    items            one prompt + the responses to judge together; kind pairwise | rating | ranking
    item_responses   which responses an item shows, in display order (A, B, ...)
    judgments        who, when, kind, what (item or response), the answer (JSON) and a free-text comment
    schema_version   one row; `MIGRATIONS` upgrades an older store when it is opened
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "metadata", "responses_t", "items_t", "item_responses_t", "judgments_t",
           "schema_version_t"]

SCHEMA_VERSION = 1
MIGRATIONS: dict = {}
"""from-version -> function(connection) that upgrades the schema by one version (none yet: version 1 is the first)."""

metadata = sa.MetaData()
responses_t = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("iteration", sa.Integer, nullable=False),
    sa.Column("sampling", sa.Text, nullable=False),
    sa.Column("eos", sa.Boolean, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
items_t = sa.Table(
    "items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
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
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("item_id", sa.Integer, sa.ForeignKey("items.id"), nullable=True),
    sa.Column("response_id", sa.Integer, sa.ForeignKey("responses.id"), nullable=True),
    sa.Column("target", sa.String(64), nullable=False),  # "item:7", "thumbs:12", "flags:12": one judgment each
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.UniqueConstraint("annotator", "target", name="one_judgment_per_target"),
)
schema_version_t = sa.Table("schema_version", metadata, sa.Column("version", sa.Integer, nullable=False))
