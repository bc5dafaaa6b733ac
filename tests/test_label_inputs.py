"""Labels are read as true/false (or 1/0), never by truthiness: "false", "no" and NaN are refused by row (bool("false")
is True: every pair became a tie, every "no" a thumbs up or a flag)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rlhf_lab.feedback.preferences import as_preference_pairs
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.cost import CostModel
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.kto import KTOConfig, KTOTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

S = SamplingConfig(max_new_tokens=3)


def pair_rows(tie):
    return [{"prompt": f"tea {i}?", "chosen": "Steep it.", "rejected": "No.", "tie": t} for i, t in enumerate(tie)]


def test_preference_pairs_read_tie_as_a_boolean(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(["false", "false"])))
    with pytest.raises(ValueError, match=r"tie must be true/false \(or 1/0\); row 0 is 'false'"):
        as_preference_pairs(path)
    with pytest.raises(ValueError, match=r"tie must be true/false \(or 1/0\); row 1 is 'no'"):
        as_preference_pairs(pair_rows([False, "no"]))
    assert as_preference_pairs(pair_rows([True, None, 0])).tie.tolist() == [True, False, False]  # missing: no tie


def test_dpo_reads_tie_as_a_boolean(tiny):
    pol, tok = tiny
    dpo = DPOTrainer(pol, tok, DPOConfig(batch_size=2, sampling=S), callbacks=[])
    with pytest.raises(ValueError, match=r"tie must be true/false \(or 1/0\); row 0 is 'false'"):
        dpo.fit(pd.DataFrame(pair_rows(["false", "false"])))
    assert dpo.update_ == 0


def test_kto_refuses_yes_no_and_missing_labels(tiny):
    pol, tok = tiny
    examples = pd.DataFrame({"prompt": ["a b", "c d", "e f", "g h"], "completion": ["x", "y", "z", "w"],
                             "label": ["yes", "no", "no", "yes"]})
    kto = KTOTrainer(pol, tok, KTOConfig(batch_size=2, sampling=S), callbacks=[])
    with pytest.raises(ValueError, match=r"label \(True = thumbs up\) must be true/false \(or 1/0\); row 0 is 'yes'"):
        kto.fit(examples)
    with pytest.raises(ValueError, match=r"label \(True = thumbs up\) must be true/false \(or 1/0\); row 1 is nan"):
        kto.fit(examples.assign(label=[1.0, np.nan, 0.0, np.nan]))
    assert kto.update_ == 0


def test_cost_model_refuses_yes_no_flags():
    rows = pd.DataFrame({"prompt": ["a", "b", "c"], "response": ["x", "y", "z"], "flagged": ["yes", "no", "no"]})
    with pytest.raises(ValueError, match=r"flagged must be true/false \(or 1/0\); row 0 is 'yes'"):
        CostModel().fit(rows)


def test_a_store_where_a_preference_file_belongs_and_pairs_where_judgments_belong_are_said(tmp_path):
    from rlhf_lab.feedback.agreement import label_matrix
    from rlhf_lab.feedback.flags import flag_examples
    from rlhf_lab.feedback.preferences import ranking_examples, rating_examples, unpaired_examples
    from rlhf_lab.feedback.store import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.db")
    ids = store.add_responses([dict(prompt="Hi?", response=r, model="m", iteration=0) for r in ("Hello!", "Go.")])
    store.record_pairwise(store.add_item(ids), "ann", "A")
    with pytest.raises(ValueError, match=r"feedback.db is a feedback store, not a preference file: pass FeedbackStore"):
        as_preference_pairs(tmp_path / "feedback.db")
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"p.jsonl line 2 is not JSON"):
        as_preference_pairs(bad)
    pairs = store.preference_pairs()
    for reader in (unpaired_examples, rating_examples, ranking_examples, flag_examples, label_matrix):
        with pytest.raises(ValueError, match=rf"{reader.__name__} reads a store's judgments .*this table has no "
                                             "answer or kind column .preference pairs, say.: pass the store"):
            reader(pairs)  # KeyError: 'kind' before
        with pytest.raises(TypeError, match=rf"{reader.__name__} needs a FeedbackStore, got str .*open it first"):
            reader(str(tmp_path / "feedback.db"))
    assert len(unpaired_examples(store.judgments_df())) == 0  # the judgments table itself still reads
