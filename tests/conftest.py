"""Shared fixtures: a tiny random policy with SmolLM2's real tokenizer, loaded once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer random Llama with SmolLM2's tokenizer (pad distinct from EOS, left padding)."""
    from rlhf_lab.models import tiny_policy

    return tiny_policy(seed=0)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (integration tests only): converted once, then read from the cache."""
    from rlhf_lab.models import load_policy

    return load_policy("smollm2-135m", device="cpu")
