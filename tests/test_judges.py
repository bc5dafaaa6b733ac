"""AI judges: registered as kind "ai", writing through the store like people; an LLM judge judged in both orders on
deterministic stub models (a position-biased one gives no preference, a content-reading one the same verdict either
way); the constitution judge; agreement reports read their judgments."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhf_lab.feedback.agreement import annotator_report
from rlhf_lab.feedback.judges import ConstitutionJudge, LLMJudge, Principle
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.policy.models import tiny_policy


class StubLM(torch.nn.Module):
    """A deterministic 'LM' whose next-token logits for " A" and " B" come from a rule on the text it reads."""

    def __init__(self, tokenizer, rule):
        super().__init__()
        self.tokenizer, self.rule, self.w = tokenizer, rule, torch.nn.Parameter(torch.zeros(1))
        self.a, self.b = (tokenizer(t, add_special_tokens=False)["input_ids"][-1] for t in (" A", " B"))

    def forward(self, input_ids):
        text = self.tokenizer.decode(input_ids[0])
        logits = torch.zeros(1, input_ids.shape[1], len(self.tokenizer))
        logits[0, -1, self.a], logits[0, -1, self.b] = self.rule(text)
        return SimpleNamespace(logits=logits)


def first_always(text):  # prefers whatever is shown first, whatever it says
    return 2.0, 0.0


def likes_thanks(text):  # reads the replies: prefers the one that says thanks, wherever it is
    a, b = text.split("Reply A:")[1].split("Reply B:")
    return float("thank" in a.lower()) * 2, float("thank" in b.lower()) * 2


@pytest.fixture(scope="module")
def tok():
    return tiny_policy(seed=0)[1]


def test_position_swap_cancels_a_first_position_judge(tok):
    judge = LLMJudge(StubLM(tok, first_always), tok, name="biased")
    p = judge.prefer("hi", "Thanks, fine.", "Go away.")
    assert p == pytest.approx(0.5) and judge.position_bias_ == pytest.approx(1 / (1 + np.exp(-2)) - 0.5)
    unswapped = LLMJudge(StubLM(tok, first_always), tok, swap=False)
    assert unswapped.prefer("hi", "Go away.", "Thanks, fine.") > 0.8  # without the swap, position decides


def test_a_content_judge_gives_the_same_verdict_in_both_orders(tok):
    judge = LLMJudge(StubLM(tok, likes_thanks), tok, name="thanks")
    forward = judge.prefer("hi", "Thanks, fine.", "Go away.")
    backward = judge.prefer("hi", "Go away.", "Thanks, fine.")
    assert forward > 0.8 and backward == pytest.approx(1 - forward) and abs(judge.position_bias_) < 1e-6


def test_judges_write_through_the_store_as_ai_and_reports_read_them(tok, tmp_path):
    store = FeedbackStore(tmp_path / "f.db")
    texts = [("Thank you, I am well.", "no no no no"), ("Go away.", "Thanks for asking, all good!"),
             ("Fine.", "Fine.")]
    items = []
    for i, (a, b) in enumerate(texts):
        ids = store.add_responses([dict(prompt=f"How are you {i}?", response=t, model="m", iteration=0)
                                   for t in (a, b)])
        items.append(store.add_item(ids))
    llm = LLMJudge(StubLM(tok, likes_thanks), tok, name="llm")
    assert len(llm.annotate(store)) == 3 and llm.annotate(store) == []  # resumes: judged once
    rules = ConstitutionJudge(name="rules")
    rules.annotate(store, items)
    df = store.judgments_df()
    assert set(df["annotator_kind"]) == {"ai"} and store.annotator_kinds() == {"llm": "ai", "rules": "ai"}
    llm_choices = df[df["annotator"] == "llm"]["answer"].map(lambda a: a["choice"]).tolist()
    assert llm_choices == ["A", "B", "tie"] and "P(A better)" in df["comment"][0]
    rules_choices = df[df["annotator"] == "rules"]["answer"].map(lambda a: a["choice"]).tolist()
    assert rules_choices == ["A", "B", "tie"]
    report = annotator_report(store)
    assert set(report.index) == {"llm", "rules"} and report.loc["llm", "n_judgments"] == 3
    assert llm.judgments_ == 3 and llm.seconds_ > 0


def test_constitution_principles_are_plain_text_and_checkers():
    judge = ConstitutionJudge([Principle("Be brief.", lambda p, r: -len(r.split()))], scale=1.0)
    assert judge.prefer("q", "Yes.", "Yes, indeed, very much so.") > 0.9 and "Be brief." in judge.about
    assert judge.prefer("q", "a b", "c d") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one Principle"):
        ConstitutionJudge([])
    with pytest.raises(ValueError, match="must contain"):
        LLMJudge(None, None, prompt="Which is better?")


def test_a_model_name_or_a_missing_tokenizer_is_said_in_one_line(tiny):
    _, tok = tiny
    with pytest.raises(TypeError, match=r"LLMJudge takes a loaded model and its tokenizer, e.g. "
                                        r"LLMJudge\(\*load_policy\('tiny'\)\)"):
        LLMJudge("tiny", tok)
    with pytest.raises(TypeError, match="got tokenizer=None"):
        LLMJudge(tiny[0], None)
