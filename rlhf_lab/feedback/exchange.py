"""Preference files in and out of a store: the common `prompt`, `chosen`, `rejected` (optional `margin`) JSON lines
that TRL and other trainers read, and CSV tables of judgments or pairs.

JSON lines keep every text exactly. In CSV, a text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage
return gets a leading `'` (`spreadsheet_safe`, OWASP's advice against CSV injection): a spreadsheet shows such a
reply as text instead of running it as a formula (`=HYPERLINK(...)`). A text that starts with `'` gets one more, so
stripping one leading `'` from each text cell that has one gives the exact texts back; or use JSON lines.

    export_jsonl(store, "pairs.jsonl");  import_jsonl(store, "pairs.jsonl");  export_csv(store, "judgments.csv")
(also as `store.export_jsonl(...)` etc.)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import sqlalchemy as sa

from rlhf_lab.core.files import write_atomic
from rlhf_lab.feedback.schema import item_responses_t, items_t, judgments_t, responses_t
from rlhf_lab.feedback.validation import pair_row

__all__ = ["export_jsonl", "import_jsonl", "export_csv", "export_unpaired_jsonl", "spreadsheet_safe",
           "spreadsheet_safe_table", "FORMULA_START", "file_to_write"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""What a text cell may not start with in a CSV export: a spreadsheet would read it as a formula."""


def spreadsheet_safe(value):
    """`value` with a leading `'` when it is text that starts with one of FORMULA_START (a spreadsheet then shows
    it as text, not a formula) or with `'` itself (so that removing one leading `'` always gives the text back);
    anything else as it is."""
    return "'" + value if isinstance(value, str) and value.startswith((*FORMULA_START, "'")) else value


def spreadsheet_safe_table(table):
    """`table` (a DataFrame) with `spreadsheet_safe` applied to every text column (object or str dtype): for a CSV
    file someone opens in a spreadsheet (a reply, a student id typed as '=HYPERLINK(...)', a file name)."""
    return table.assign(**{c: table[c].map(spreadsheet_safe) for c in table.columns if table[c].dtype.kind == "O"})


def file_to_write(path: str | Path, example: str) -> Path:
    """`path` as a Path; a folder is refused in one line naming it (not an error about a hidden temporary file)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name, e.g. {path / example}")
    if path.is_file():
        with path.open("rb") as f:
            if f.read(16) == b"SQLite format 3\x00":  # a feedback store (this one, maybe): replacing it loses judgments
                raise ValueError(f"{path} is a SQLite database (a feedback store): an export never replaces it; give "
                                 f"another file name, e.g. {path.with_name(example)}")
    return path


def export_jsonl(store, path: str | Path, include_ties: bool = False) -> int:
    """Write preference pairs as JSON lines: prompt, chosen, rejected, margin (when known), and the pair's
    iteration, model, the model and store id of each reply (chosen_model, rejected_model, chosen_id, rejected_id),
    annotator, tie and source_kind. Ties are left out unless `include_ties` (trainers such as TRL would read a tie
    as a preference). Returns the number of lines written."""
    path = file_to_write(path, "pairs.jsonl")
    pairs = store.preference_pairs(include_ties=include_ties)
    lines = []
    for p in pairs.itertuples():
        row = dict(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected)
        if not math.isnan(p.margin):
            row["margin"] = p.margin
        row.update(tie=bool(p.tie), annotator=p.annotator, iteration=int(p.iteration), model=p.model,
                   chosen_model=p.chosen_model, rejected_model=p.rejected_model, chosen_id=int(p.chosen_id),
                   rejected_id=int(p.rejected_id), source_kind=p.source_kind)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    write_atomic(path, "".join(lines))  # a crash leaves the previous export whole, never a shorter valid one
    return len(pairs)

def import_jsonl(store, path: str | Path, annotator: str = "imported", model: str = "imported",
                 iteration: int = 0) -> int:
    """Read preference pairs (prompt, chosen, rejected, optional margin/tie/annotator/model/iteration, and
    chosen_model/rejected_model where the two replies' models differ) as pairwise judgments, A = chosen. The
    replies get new ids in this store (an exported file's chosen_id and rejected_id are its own store's). Every line
    is checked first and the whole file is one transaction: a bad line imports nothing. A file already imported
    (same SHA-256) is refused. Returns the count."""
    fix = "give the path of a JSON-lines file of pairs (export_jsonl writes one)"
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder: {fix}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"No file at {path}: {fix}")
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        lines = data.decode("utf-8-sig").splitlines()  # a byte-order mark, as some editors write, is skipped
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {n} is not JSON ({err.msg}, column {err.colno}); each line must be one "
                             "JSON object") from None
        rows.append(pair_row(row, f"{path} line {n}", annotator, model, iteration))
    comment = f"imported sha256:{digest}"
    with store.transaction() as conn:
        if conn.execute(sa.select(judgments_t.c.id).where(judgments_t.c.comment == comment).limit(1)).first():
            raise ValueError(f"{path} was imported into this store already (same SHA-256); importing it again would "
                             "duplicate every pair")
        for row in rows:
            meta = dict(prompt=row["prompt"], sampling="{}", eos=None, iteration=row["iteration"],
                        created_at=time.time())
            ids = [conn.execute(responses_t.insert().values(text=row[k], model=row[f"{k}_model"], **meta))
                   .inserted_primary_key[0] for k in ("chosen", "rejected")]
            item_id = conn.execute(items_t.insert().values(kind="pairwise", prompt=row["prompt"],
                                                           created_at=time.time())).inserted_primary_key[0]
            conn.execute(item_responses_t.insert(), [dict(item_id=item_id, position=i, response_id=r)
                                                     for i, r in enumerate(ids)])
            answer = {"choice": "tie" if row["tie"] else "A", "strength": None}
            if row["margin"] is not None:
                answer["margin"] = row["margin"]
            conn.execute(judgments_t.insert().values(
                annotator=row["annotator"], created_at=time.time(), kind="pairwise", item_id=item_id,
                target=f"item:{item_id}", answer=json.dumps(answer), comment=comment))
    return len(rows)


def export_csv(store, path: str | Path, what: str = "judgments") -> int:
    """Write all judgments (or, with what="pairs", the preference pairs) as CSV; lists and dicts as JSON. A text
    cell starting with = + - @, a tab or a carriage return gets a leading ' (`spreadsheet_safe`): a spreadsheet that
    opens the file shows it as text and never runs it as a formula."""
    if what not in ("judgments", "pairs"):
        raise ValueError(f"what must be 'judgments' or 'pairs', got {what!r}")
    path = file_to_write(path, f"{what}.csv")
    df = store.judgments_df() if what == "judgments" else store.preference_pairs()
    for col in ("response_ids", "responses", "answer"):
        if col in df:
            df[col] = df[col].map(lambda v: json.dumps(v, ensure_ascii=False))
    df = spreadsheet_safe_table(df)
    # CRLF rows (RFC 4180): a text holding a carriage return is quoted, so it cannot split its row in two
    write_atomic(path, df.to_csv(index=False, lineterminator="\r\n").encode("utf-8"))
    return len(df)


def export_unpaired_jsonl(store, path: str | Path) -> int:
    """Write thumbs judgments as TRL's unpaired JSON lines (prompt, completion, label: true = thumbs up), plus
    annotator, iteration, model and the reply's store id (response_id); KTO trainers read these. Returns the
    number of lines written."""
    from rlhf_lab.feedback.preferences import unpaired_examples

    path = file_to_write(path, "unpaired.jsonl")
    examples = unpaired_examples(store)
    write_atomic(path, "".join(json.dumps(dict(prompt=e.prompt, completion=e.completion, label=bool(e.label),
                                               annotator=e.annotator, iteration=int(e.iteration), model=e.model,
                                               response_id=int(e.response_id)),
                                          ensure_ascii=False) + "\n" for e in examples.itertuples()))
    return len(examples)
