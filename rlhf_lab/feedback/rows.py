"""The store's rows read back as records (`feedback.records`) and as the judgments table: queries on a connection
the store opens, so a store method reads everything it needs in one transaction."""

from __future__ import annotations

import json

import pandas as pd
import sqlalchemy as sa

from rlhf_lab.feedback.records import Item, Response
from rlhf_lab.feedback.schema import item_responses_t, items_t, judgments_t, responses_t

__all__ = ["read_responses", "read_items", "judgments_frame", "JUDGMENT_COLUMNS"]

JUDGMENT_COLUMNS = ["judgment_id", "annotator", "timestamp", "kind", "item_id", "response_id", "prompt",
                    "response_ids", "responses", "answer", "comment", "iteration", "model"]


def read_responses(conn, ids=None) -> dict[int, Response]:
    """Replies by id: those in `ids`, or every one (None)."""
    q = sa.select(responses_t)
    if ids is not None:
        q = q.where(responses_t.c.id.in_(list(ids)))
    return {r.id: Response(r.id, r.prompt, r.text, r.model, r.iteration, json.loads(r.sampling), r.eos)
            for r in conn.execute(q)}


def read_items(conn, where=None) -> list[Item]:
    """Items (with their replies in the order shown) in insertion order, those matching `where` (a SQLAlchemy
    condition on `items_t`) or every one."""
    q = sa.select(items_t).order_by(items_t.c.id)
    if where is not None:
        q = q.where(where)
    rows = conn.execute(q).all()
    if not rows:
        return []
    links = conn.execute(sa.select(item_responses_t).where(item_responses_t.c.item_id.in_([r.id for r in rows]))
                         .order_by(item_responses_t.c.item_id, item_responses_t.c.position)).all()
    resp = read_responses(conn, {link.response_id for link in links})
    by_item: dict[int, list[Response]] = {}
    for link in links:
        by_item.setdefault(link.item_id, []).append(resp[link.response_id])
    return [Item(r.id, r.kind, r.prompt, by_item[r.id]) for r in rows]


def judgments_frame(conn, annotator_kinds: dict[str, str]) -> pd.DataFrame:
    """One row per judgment (JUDGMENT_COLUMNS, then `annotator_kind`: "person" unless registered otherwise): who,
    when, kind, item, prompt, response ids and texts, answer, iteration (the newest reply's) and model(s)."""
    rows = conn.execute(sa.select(judgments_t).order_by(judgments_t.c.id)).all()
    items = {it.id: it for it in read_items(conn)}
    resp = read_responses(conn)
    out = []
    for j in rows:
        shown = items[j.item_id].responses if j.item_id is not None else [resp[j.response_id]]
        out.append(dict(
            judgment_id=j.id, annotator=j.annotator, timestamp=j.created_at, kind=j.kind, item_id=j.item_id,
            response_id=j.response_id, prompt=shown[0].prompt, response_ids=[r.id for r in shown],
            responses=[r.text for r in shown], answer=json.loads(j.answer), comment=j.comment,
            iteration=max(r.iteration for r in shown), model=",".join(sorted({r.model for r in shown}))))
    df = pd.DataFrame(out, columns=JUDGMENT_COLUMNS)
    df["annotator_kind"] = df["annotator"].map(annotator_kinds).fillna("person")
    df["timestamp"] = pd.to_datetime(df["timestamp"].astype(float), unit="s", utc=True)
    df["item_id"] = df["item_id"].astype("Int64")
    df["response_id"] = df["response_id"].astype("Int64")
    return df
