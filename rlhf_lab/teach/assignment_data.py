"""Per-student data for the graded assignments, computed from the student id the notebook asks for.

Every number a student reports is computed from their own data, so answers differ between students and copying a
neighbour's numbers fails; the hidden tests call the same functions with the `student_id` from the notebook to
recompute the expected values. Everything is seeded by `student_seed(student_id, assignment)` (SHA-256 of both), so
the notebook and the grader get identical data on any machine.

- Assignment 1 (`reward_model`): `student_utility` (the taste of the student's simulated crowd, six weights over the
  reply features, kept far from `rlhf_lab.feedback.gold.DEFAULT_WEIGHTS`), `preference_pairs` (noisy Bradley–Terry
  choices by that crowd) and `ranked_pairs` (noise-free held-out pairs ranked by any utility, for grading).
- Assignment 4 (`logprobs_dpo`): `tiny_lm`, a real causal LM architecture small enough to run in a test.
- Assignment 3 (`overoptimisation`): `overoptimisation_metrics`, three synthetic PPO runs in Gao et al.'s form
  (gold ≈ d·(α − b·ln d), d = √KL) with per-student constants and noise.
- Assignment 5 (`gold_gain`): `rlhf_lab.teach.rating_task` builds its tasks from `reply_features` and `GOLD_WEIGHTS`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re

import numpy as np
import pandas as pd
import torch

__all__ = ["STUDENT_ID_RULE", "REPLY_FEATURES", "GOLD_WEIGHTS", "check_student_id", "student_seed", "reply_features",
           "student_utility", "secret_taste", "preference_pairs", "pair_tensors", "ranked_pairs", "KL_COEFS",
           "overoptimisation_metrics", "tiny_lm"]

STUDENT_ID_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{2,63}$")
REPLY_FEATURES = ("sentiment", "length_fit", "repetition", "overlap", "answers_question", "politeness")
GOLD_WEIGHTS = (1.0, 1.0, -2.0, 1.0, 0.5, 0.3)  # the lab's default gold utility on these features, as a tuple
KL_COEFS = (0.01, 0.05, 0.2)


def check_student_id(student_id) -> str:
    """The id, stripped; a ValueError that says what to type when it is missing or malformed."""
    if not isinstance(student_id, str) or not STUDENT_ID_RULE.match(student_id.strip()):
        raise ValueError(f"student_id is {student_id!r}: set it to your student id as a string, e.g. "
                         "student_id = \"s1234567\" (3 to 64 letters, digits or . _ @ + -)")
    return student_id.strip()


def student_seed(student_id: str, assignment: str) -> int:
    """A 63-bit seed from the student id and the assignment name (the same on every machine)."""
    digest = hashlib.sha256(f"{assignment}:{check_student_id(student_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def reply_features(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 6) reply features in the ranges the lab's feature extractors produce."""
    return torch.stack([
        torch.rand(n, generator=generator) * 2 - 1,                  # sentiment in [-1, 1]
        -torch.randn(n, generator=generator).abs() * 0.7,            # length_fit <= 0
        torch.rand(n, generator=generator) ** 2 * 0.6,               # repetition in [0, 0.6]
        torch.rand(n, generator=generator),                          # overlap in [0, 1]
        (torch.rand(n, generator=generator) < 0.6).float(),          # answers_question in {0, 1}
        (torch.rand(n, generator=generator) < 0.3).float(),          # politeness in {0, 1}
    ], dim=1)


def student_utility(student_id: str) -> torch.Tensor:
    """(6,) weights of the student's crowd: random, scaled like the gold utility, cosine with it below 0.2."""
    g = torch.Generator().manual_seed(student_seed(student_id, "reward_model/utility"))
    gold = torch.tensor(GOLD_WEIGHTS)
    while True:
        w = torch.randn(6, generator=g)
        w = w / w.norm() * gold.norm()
        if float(w @ gold) / float(gold.norm() ** 2) < 0.2 and float(w.abs().min()) > 0.15:
            return w


def secret_taste(grader_secret: str | None, student_id: str) -> torch.Tensor:
    """(6,) weights of a crowd that only the grader knows: drawn from HMAC(grader_secret, student id).

    `grader_secret` is the build's secret (`rlhf-lab assignments grade` hands it to tests that ask for it); without one
    (otter's own runner, a student's copy of the tests) a fixed public stand-in is used, which real grading never uses.
    """
    key = (grader_secret or "no-grader-secret").encode()
    digest = hmac.new(key, check_student_id(student_id).encode(), hashlib.sha256).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    gold = torch.tensor(GOLD_WEIGHTS)
    while True:
        w = torch.randn(6, generator=g)
        w = w / w.norm() * gold.norm()
        if abs(float(w @ gold)) / float(gold.norm() ** 2) < 0.3 and float(w.abs().min()) > 0.15:
            return w


def pair_tensors(pairs: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_chosen, x_rejected), each (N, 6) float32, from a table with chosen_<feature> and rejected_<feature>."""
    return tuple(torch.tensor(pairs[[f"{side}_{f}" for f in REPLY_FEATURES]].to_numpy(), dtype=torch.float32)
                 for side in ("chosen", "rejected"))


def preference_pairs(student_id: str, n: int = 600) -> pd.DataFrame:
    """`n` judgments by the student's simulated crowd: two replies' features, the chosen one first.

    Annotators choose by Bradley–Terry on the crowd's utility at a temperature that makes about 1 choice in 14 go
    against it (noisy people), so a model that fits every pair is overfitting.
    """
    g = torch.Generator().manual_seed(student_seed(student_id, "reward_model/pairs"))
    w = student_utility(student_id)
    a, b = reply_features(n, g), reply_features(n, g)
    gap = (a - b) @ w
    temperature = 0.12 * float(gap.std())
    a_chosen = torch.rand(n, generator=g) < torch.sigmoid(gap / temperature)
    chosen, rejected = torch.where(a_chosen[:, None], a, b), torch.where(a_chosen[:, None], b, a)
    columns = {f"chosen_{f}": chosen[:, i].numpy() for i, f in enumerate(REPLY_FEATURES)}
    columns.update({f"rejected_{f}": rejected[:, i].numpy() for i, f in enumerate(REPLY_FEATURES)})
    return pd.DataFrame(columns).round(4)


def ranked_pairs(weights, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` fresh pairs (chosen, rejected), each (n, 6), ranked without noise by the utility `weights` (6,)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.as_tensor(weights, dtype=torch.float32)
    a, b = reply_features(n, g), reply_features(n, g)
    a_better = (a - b) @ w > 0
    return torch.where(a_better[:, None], a, b), torch.where(a_better[:, None], b, a)


def overoptimisation_metrics(student_id: str, updates: int = 60) -> pd.DataFrame:
    """Three PPO runs (kl_coef 0.01, 0.05, 0.2), one row per update, in the lab's metric names.

    KL rises to a ceiling that the KL coefficient sets; the proxy score grows like √KL; the gold reward follows
    Gao et al.'s d·(α − b·ln d) with d = √KL, which peaks at d* = e^(α/b − 1); every constant and the noise
    depend on the student id.
    """
    rng = np.random.default_rng(student_seed(student_id, "overoptimisation"))
    proxy_slope = rng.uniform(0.65, 0.9)
    d_star, b = rng.uniform(2.6, 3.6), rng.uniform(0.3, 0.45)
    alpha = b * (1 + math.log(d_star))
    ceiling, tau = rng.uniform(0.85, 1.15), rng.uniform(12, 20)
    rows = []
    for kl_coef, kl_max in zip(KL_COEFS, (32.0, 9.0, 3.0)):
        t = np.arange(1, updates + 1)
        kl = kl_max * ceiling * (1 - np.exp(-t / tau)) * (1 + 0.04 * rng.standard_normal(updates))
        kl = np.maximum(kl, 0.05)
        d = np.sqrt(kl)
        score = proxy_slope * d + 0.04 * rng.standard_normal(updates)
        gold = d * (alpha - b * np.log(d)) + 0.012 * rng.standard_normal(updates)
        for i in range(updates):
            rows.append({"kl_coef": kl_coef, "update": int(t[i]), "objective/kl": round(float(kl[i]), 4),
                         "objective/scores": round(float(score[i]), 4),
                         "objective/rlhf_reward": round(float(score[i] - kl_coef * kl[i]), 4),
                         "gold_reward": round(float(gold[i]), 4)})
    return pd.DataFrame(rows)


def tiny_lm(seed: int = 0, vocab_size: int = 100):
    """A tiny randomly initialised causal LM (a 2-layer Llama, 32 wide, `vocab_size` tokens), in eval mode.

    The same seed gives the same weights on any machine, without a tokenizer or a download; its logits for a short
    batch are a few thousand numbers, cheap to hand to a student's function in a test.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()
