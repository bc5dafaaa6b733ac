"""A store's judgments as the rows other trainers read: TRL, OpenRLHF and verl (`rlhf-lab export` writes them).

    rows = trainer_rows(store, annotator="*", iteration=None)       # pairs, thumbs and prompts, filtered
    trl_preference(rows, chat=True)      # {"prompt": [user turn], "chosen": [assistant turn], "rejected": [...], ...}
    trl_unpaired(rows, chat=False)       # {"prompt": "...", "completion": "...", "label": True, ...}   (KTO)
    verl_prompts(rows)                   # {"data_source", "prompt": [user turn], "ability", "reward_model", ...}

Standard rows hold strings; conversational rows (`chat=True`, for a policy that reads a chat template) hold
`{"role", "content"}` messages: the prompt as a user turn (after a system turn when the run set one), each reply as
one assistant turn. TRL and OpenRLHF (`--apply_chat_template`) read both forms; verl's prompts are always messages.

Every row also carries `iteration`, `model` and `annotator` (verl: inside `extra_info`), which the trainers ignore;
reply rows also carry each reply's model and id in the store (chosen_model, rejected_model, chosen_id, rejected_id;
response_id for thumbs), so a row can be traced back to the reply that was judged.
Ties are left out of the pairs (a trainer would read a tie as a preference). `margin` is the judgment's strength
(pairwise) or score difference (ratings); when any pair has one, every row gets the column and pairs without one
(rankings, pairwise without a strength) get 0.0, which is the plain Bradley–Terry loss in TRL's RewardTrainer and
OpenRLHF's `--margin_loss` (a missing value would stop TRL's collator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlhf_lab.feedback.preferences import unpaired_examples

__all__ = ["EVERYONE", "TrainerRows", "trainer_rows", "messages", "trl_preference", "trl_unpaired",
           "openrlhf_unpaired", "openrlhf_prompts", "verl_prompts", "DATA_SOURCE"]

EVERYONE = "*"
"""`trainer_rows(annotator=EVERYONE)`: every annotator's judgments."""

DATA_SOURCE = "rlhf-lab"
"""verl's `data_source` and OpenRLHF's `datasource` of every exported prompt."""


@dataclass
class TrainerRows:
    """What a store holds for other trainers, already filtered: plain dicts, one per pair / thumbs / prompt."""

    pairs: list[dict] = field(default_factory=list)
    """prompt, chosen, rejected, margin (float or None), iteration, model, annotator, chosen_model, rejected_model,
    chosen_id, rejected_id (the replies' ids in the store), source_kind."""
    unpaired: list[dict] = field(default_factory=list)
    """prompt, completion, label (True = thumbs up), iteration, model, annotator, response_id."""
    prompts: list[dict] = field(default_factory=list)
    """Each judged prompt once, in the order first judged: prompt, iteration, model (of its first judgment)."""
    ties_left_out: int = 0
    system_prompt: str | None = None
    """The system turn conversational rows start with (the run's `SamplingConfig.system_prompt`)."""


def trainer_rows(store, annotator: str = EVERYONE, iteration: int | None = None,
                 system_prompt: str | None = None) -> TrainerRows:
    """The store's preference pairs (pairwise, ranking and rating judgments; ties left out) and thumbs, by one
    annotator (or `EVERYONE`) and one iteration (or all). An annotator or iteration with no judgments in the store
    raises ValueError naming the ones there are."""
    pairs = store.preference_pairs(include_ties=True)
    thumbs = unpaired_examples(store)
    judged = store.judgments_df()
    if annotator != EVERYONE:
        if annotator not in set(judged["annotator"]):
            names = sorted(set(judged["annotator"]))
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            raise ValueError(f"--annotator {annotator!r} judged nothing in this store; annotators: {shown or 'none'}"
                             f" (or '{EVERYONE}' for everyone)")
        pairs, thumbs = pairs[pairs["annotator"] == annotator], thumbs[thumbs["annotator"] == annotator]
        judged = judged[judged["annotator"] == annotator]
    if iteration is not None:
        if iteration not in set(judged["iteration"]):
            there = ", ".join(map(str, sorted(set(judged["iteration"])))) or "none"
            raise ValueError(f"--iteration {iteration}: no judgments of that iteration here; iterations: {there}")
        pairs, thumbs = pairs[pairs["iteration"] == iteration], thumbs[thumbs["iteration"] == iteration]
    rows = TrainerRows(ties_left_out=int(pairs["tie"].sum()), system_prompt=system_prompt)
    for p in pairs[~pairs["tie"]].itertuples():
        margin = None if math.isnan(p.margin) else float(p.margin)
        rows.pairs.append(dict(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, margin=margin,
                               iteration=int(p.iteration), model=p.model, annotator=p.annotator,
                               chosen_model=p.chosen_model, rejected_model=p.rejected_model,
                               chosen_id=int(p.chosen_id), rejected_id=int(p.rejected_id), source_kind=p.source_kind))
    for e in thumbs.itertuples():
        rows.unpaired.append(dict(prompt=e.prompt, completion=e.completion, label=bool(e.label),
                                  iteration=int(e.iteration), model=e.model, annotator=e.annotator,
                                  response_id=int(e.response_id)))
    first: dict[str, dict] = {}
    for r in sorted(rows.pairs + rows.unpaired, key=lambda r: r["iteration"]):  # stable: store order within one
        first.setdefault(r["prompt"], dict(prompt=r["prompt"], iteration=r["iteration"], model=r["model"]))
    rows.prompts = list(first.values())
    return rows


def messages(prompt: str, system_prompt: str | None = None) -> list[dict]:
    """A prompt as chat messages: an optional system turn, then the user turn."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + \
        [{"role": "user", "content": prompt}]


def _reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _origin(r: dict) -> dict:
    return dict(iteration=r["iteration"], model=r["model"], annotator=r["annotator"])


def trl_preference(rows: TrainerRows, chat: bool) -> list[dict]:
    """TRL's preference rows (explicit prompt): prompt, chosen, rejected, margin (see the module docstring), then
    iteration, model, annotator, chosen_model, rejected_model, chosen_id, rejected_id, source_kind. OpenRLHF's
    reward and DPO trainers read the same rows (`--prompt_key prompt --chosen_key chosen --rejected_key rejected`)."""
    with_margin = any(p["margin"] is not None for p in rows.pairs)
    out = []
    for p in rows.pairs:
        row = dict(prompt=messages(p["prompt"], rows.system_prompt), chosen=_reply(p["chosen"]),
                   rejected=_reply(p["rejected"])) if chat else \
            dict(prompt=p["prompt"], chosen=p["chosen"], rejected=p["rejected"])
        if with_margin:
            row["margin"] = 0.0 if p["margin"] is None else p["margin"]
        out.append({**row, **_origin(p), **{k: p[k] for k in ("chosen_model", "rejected_model", "chosen_id",
                                                              "rejected_id", "source_kind")}})
    return out


def trl_unpaired(rows: TrainerRows, chat: bool) -> list[dict]:
    """TRL's unpaired preference rows for KTO: prompt, completion, label (bool: thumbs up), iteration, model,
    annotator, response_id (the reply's id in the store)."""
    return [dict(prompt=messages(e["prompt"], rows.system_prompt) if chat else e["prompt"],
                 completion=_reply(e["completion"]) if chat else e["completion"], label=e["label"], **_origin(e),
                 response_id=e["response_id"])
            for e in rows.unpaired]


def openrlhf_unpaired(rows: TrainerRows, chat: bool) -> list[dict]:
    """OpenRLHF's KTO rows (`--input_key prompt --output_key completion --label_key label`): TRL's, with the label
    as 1 or 0 (its trainer selects `labels == 1` and `labels == 0` in a LongTensor)."""
    return [{**row, "label": int(row["label"])} for row in trl_unpaired(rows, chat)]


def openrlhf_prompts(rows: TrainerRows, chat: bool) -> list[dict]:
    """OpenRLHF's PPO prompt rows (`--input_key prompt`): the prompt (messages when `chat`), `datasource`,
    iteration, model."""
    return [dict(prompt=messages(p["prompt"], rows.system_prompt) if chat else p["prompt"], datasource=DATA_SOURCE,
                 iteration=p["iteration"], model=p["model"]) for p in rows.prompts]


def verl_prompts(rows: TrainerRows) -> list[dict]:
    """verl's RL prompt rows: data_source, prompt (chat messages: verl always applies the chat template), ability,
    reward_model {style "model": a learned reward model scores the replies, ground_truth "" (unused)} and
    extra_info {split, index, iteration, model}."""
    return [dict(data_source=DATA_SOURCE, prompt=messages(p["prompt"], rows.system_prompt), ability="alignment",
                 reward_model={"style": "model", "ground_truth": ""},
                 extra_info={"split": "train", "index": i, "iteration": p["iteration"], "model": p["model"]})
            for i, p in enumerate(rows.prompts)]
