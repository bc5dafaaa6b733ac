"""Agreement and annotator quality: Cohen's kappa, Fleiss' kappa, Krippendorff's alpha, and a per-annotator report.

Everything works on a *label matrix*: one row per unit (an item, or an (item, response) for ratings), one column per
annotator, missing labels as NaN. `label_matrix` builds it from a store or from `store.judgments_df()`.

Chance-corrected agreement (1 = perfect, 0 = what chance gives, < 0 = worse than chance):

    Cohen (2 raters)      kappa = (p_o - p_e) / (1 - p_e),  p_e = sum_c p_1(c) p_2(c)
    Fleiss (n raters)     kappa = (P_bar - P_e) / (1 - P_e),  P_i = (sum_c n_ic^2 - n_i) / (n_i (n_i - 1)),
                          P_e = sum_c p_c^2   (Fleiss 1971; rows may have different n_i)
    Krippendorff's alpha  alpha = 1 - D_o / D_e over the coincidence matrix o_ck (missing data allowed),
                          with distance delta^2 for nominal, ordinal, interval or ratio values (Krippendorff 2011)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.validation import judgments_table

__all__ = ["LABEL_KINDS", "label_matrix", "cohen_kappa", "category_counts", "fleiss_kappa", "krippendorff_alpha",
           "majority_agreement", "gold_agreement", "pairwise_kappas", "gold_labels_from_df", "annotator_report",
           "panel_agreement"]

LABEL_KINDS = ("pairwise", "rating", "ranking", "thumbs", "flags")


def _missing(x) -> bool:
    """No label: None, pandas' NA, or a NaN of any float type (numpy's float32 NaN too)."""
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and math.isnan(x))


def label_matrix(data, kind: str = "pairwise") -> pd.DataFrame:
    """Units x annotators labels from a FeedbackStore or its `judgments_df()`.

    pairwise: the choice (A, B, tie, both_bad) per item; rating: the score per (item, response);
    ranking: the id of the response ranked first per item; thumbs: up/down per response; flags: the sorted flags.
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {LABEL_KINDS}")
    df = judgments_table(data, "label_matrix")
    df = df[df["kind"] == kind]
    rows = []
    for j in df.itertuples():
        a = j.answer
        if kind == "pairwise":
            rows.append((j.item_id, j.annotator, a["choice"]))
        elif kind == "rating":
            rows += [((j.item_id, rid), j.annotator, s) for rid, s in zip(j.response_ids, a["scores"])]
        elif kind == "ranking":
            rows.append((j.item_id, j.annotator, a["order"][0]))
        elif kind == "thumbs":
            rows.append((j.response_id, j.annotator, "up" if a["up"] else "down"))
        else:
            rows.append((j.response_id, j.annotator, ",".join(sorted(a["flags"])) or "none"))
    long = pd.DataFrame(rows, columns=["unit", "annotator", "label"])
    if long.empty:
        return pd.DataFrame()
    return long.pivot_table(index="unit", columns="annotator", values="label", aggfunc="last").sort_index()


def cohen_kappa(a, b) -> float:
    """Cohen's kappa between two raters' labels of the same units (units missing from either are dropped; the two
    lists must be as long, one label or a missing value per unit)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs one label per unit from each rater: got {len(a)} and {len(b)} labels "
                         "(mark a unit one rater skipped with None)")
    pairs = [(x, y) for x, y in zip(a, b) if not _missing(x) and not _missing(y)]
    if not pairs:
        return math.nan
    cats = sorted({x for x, _ in pairs} | {y for _, y in pairs}, key=str)
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for x, y in pairs:
        table[index[x], index[y]] += 1
    table /= table.sum()
    p_o = np.trace(table)
    p_e = float(table.sum(1) @ table.sum(0))
    return math.nan if p_e == 1 else float((p_o - p_e) / (1 - p_e))


def category_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Units x categories counts (the input of Fleiss' kappa) from a label matrix."""
    long = labels.stack().rename("label").reset_index()
    return pd.crosstab(long.iloc[:, 0], long["label"])


def fleiss_kappa(counts) -> float:
    """Fleiss' kappa from a units x categories matrix of how many raters chose each category (rows with fewer than
    2 ratings are dropped)."""
    n_ic = np.asarray(counts, dtype=float)
    if n_ic.ndim != 2:
        raise ValueError(f"fleiss_kappa needs a units x categories table of counts (2-D), got shape {n_ic.shape}")
    n_i = n_ic.sum(1)
    n_ic, n_i = n_ic[n_i >= 2], n_i[n_i >= 2]
    if len(n_i) == 0:
        return math.nan
    p_i = ((n_ic ** 2).sum(1) - n_i) / (n_i * (n_i - 1))  # agreement within each unit
    p_c = n_ic.sum(0) / n_i.sum()                         # how often each category is used
    p_bar, p_e = p_i.mean(), float((p_c ** 2).sum())
    return math.nan if p_e == 1 else float((p_bar - p_e) / (1 - p_e))


def krippendorff_alpha(labels, level: str = "nominal") -> float:
    """Krippendorff's alpha of a units x coders matrix (DataFrame or 2-D array; NaN/None = missing).

    level: nominal (any labels), or ordinal, interval, ratio (numeric labels).
    """
    if level not in ("nominal", "ordinal", "interval", "ratio"):  # before the labels are read as numbers
        raise ValueError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")
    values = labels.to_numpy(dtype=object) if isinstance(labels, pd.DataFrame) else np.asarray(labels, dtype=object)
    if level != "nominal":  # numbers, ordered by value whatever their dtype (an int column beside a float one)
        values = np.array([[math.nan if _missing(v) else float(v) for v in unit] for unit in values], dtype=object)
    cats = sorted({v for v in values.ravel() if not _missing(v)}, key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    # 1. coincidence matrix: every ordered pair of values in a unit, each unit weighted 1 / (m_u - 1)
    o = np.zeros((k, k))
    for unit in values:
        n_u = np.bincount([index[v] for v in unit if not _missing(v)], minlength=k).astype(float)
        m_u = n_u.sum()
        if m_u >= 2:
            o += (np.outer(n_u, n_u) - np.diag(n_u)) / (m_u - 1)
    n_c = o.sum(1)
    n = n_c.sum()
    if n == 0 or k < 2:
        return math.nan
    # 2. squared distance between values
    if level == "nominal":
        d2 = 1.0 - np.eye(k)
    else:
        v = np.array(cats, dtype=float)
        if level == "interval":
            d2 = (v[:, None] - v[None, :]) ** 2
        elif level == "ratio":
            diff, total = v[:, None] - v[None, :], v[:, None] + v[None, :]
            d2 = np.divide(diff, total, out=np.zeros_like(diff), where=total != 0) ** 2  # 0 and 0: distance 0
        elif level == "ordinal":
            cum = np.cumsum(n_c)
            lo, hi = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
            d2 = (cum[hi] - cum[lo] + n_c[lo] - (n_c[lo] + n_c[hi]) / 2) ** 2
        else:
            raise ValueError(f"level must be nominal, ordinal, interval or ratio, got {level!r}")
    # 3. alpha = 1 - observed / expected disagreement
    d_o = (o * d2).sum() / n
    d_e = (np.outer(n_c, n_c) * d2).sum() / (n * (n - 1))
    return math.nan if d_e == 0 else float(1 - d_o / d_e)


def majority_agreement(labels: pd.DataFrame) -> pd.Series:
    """Per annotator: how often their label equals the majority label of the *other* annotators on a unit
    (units where the others have no single most common label are skipped)."""
    out = {}
    for a in labels.columns:
        hits = total = 0
        for own, others in zip(labels[a], labels.drop(columns=a).itertuples(index=False)):
            votes = pd.Series([x for x in others if not _missing(x)]).value_counts()
            if _missing(own) or votes.empty or (len(votes) > 1 and votes.iloc[0] == votes.iloc[1]):
                continue
            hits += own == votes.index[0]
            total += 1
        out[a] = hits / total if total else math.nan
    return pd.Series(out, name="majority_agreement", dtype=float)


def gold_agreement(labels: pd.DataFrame, gold) -> pd.Series:
    """Per annotator: how often their label equals the gold label (`gold`: unit -> label mapping or Series)."""
    gold = pd.Series(gold)
    out = {}
    for a in labels.columns:
        own = labels[a].dropna()
        shared = own.index.intersection(gold.index)
        out[a] = float((own[shared] == gold[shared]).mean()) if len(shared) else math.nan
    return pd.Series(out, name="gold_agreement", dtype=float)


def pairwise_kappas(labels: pd.DataFrame) -> pd.DataFrame:
    """Annotator x annotator matrix of Cohen's kappa (diagonal NaN)."""
    names = list(labels.columns)
    out = pd.DataFrame(np.nan, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out.loc[a, b] = out.loc[b, a] = cohen_kappa(labels[a], labels[b])
    return out


def gold_labels_from_df(df: pd.DataFrame, gold=None, tie_margin: float = 0.05) -> dict:
    """Gold pairwise labels (item id -> A | B | tie) for the pairwise items in a judgments DataFrame."""
    gold = gold if callable(getattr(gold, "score", None)) else GoldUtility()
    labels = {}
    for j in df[df["kind"] == "pairwise"].drop_duplicates("item_id").itertuples():
        u_a, u_b = (float(u) for u in gold.score([j.prompt] * 2, list(j.responses)))
        labels[j.item_id] = "tie" if abs(u_a - u_b) < tie_margin else ("A" if u_a > u_b else "B")
    return labels


def annotator_report(data, gold=None, kind: str = "pairwise", threshold: float = 0.15) -> pd.DataFrame:
    """One row per annotator: judgments, agreement with the others' majority, mean Cohen's kappa with each other
    annotator, agreement with gold (when `gold` is given: a GoldUtility, True for the default one, or a mapping
    unit -> label), and `suspect`: majority agreement more than `threshold` below the panel's median."""
    df = judgments_table(data, "annotator_report")
    labels = label_matrix(df, kind)
    report = pd.DataFrame(index=pd.Index(labels.columns, name="annotator"))
    report["n_judgments"] = labels.notna().sum().astype(int)
    report["majority_agreement"] = majority_agreement(labels)
    report["mean_kappa"] = pairwise_kappas(labels).mean(axis=1, skipna=True)
    if gold is not None:
        if kind == "pairwise" and (gold is True or hasattr(gold, "score")):
            gold = gold_labels_from_df(df, None if gold is True else gold)
        report["gold_agreement"] = gold_agreement(labels, gold)
    if kind == "pairwise":
        report["tie_rate"] = (labels == "tie").sum() / labels.notna().sum()
    report["suspect"] = report["majority_agreement"] < report["majority_agreement"].median() - threshold
    return report


def panel_agreement(data, kind: str = "pairwise") -> dict:
    """Summary figures for a panel: units, annotators, Fleiss' kappa, Krippendorff's alpha (nominal), mean Cohen."""
    labels = label_matrix(data, kind)
    if labels.empty:
        return {"kind": kind, "units": 0, "annotators": 0, "fleiss_kappa": math.nan,
                "krippendorff_alpha": math.nan, "mean_cohen_kappa": math.nan}
    kappas = pairwise_kappas(labels).to_numpy()
    off_diag = kappas[~np.isnan(kappas)]
    return {"kind": kind, "units": int(len(labels)), "annotators": int(labels.shape[1]),
            "fleiss_kappa": fleiss_kappa(category_counts(labels)),
            "krippendorff_alpha": krippendorff_alpha(labels, "nominal"),
            "mean_cohen_kappa": float(off_diag.mean()) if off_diag.size else math.nan}
