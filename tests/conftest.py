"""Shared fixtures: a tiny random policy with SmolLM2's real tokenizer, loaded once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer random Llama with SmolLM2's tokenizer (pad distinct from EOS, left padding)."""
    from rlhf_lab.policy.models import tiny_policy

    return tiny_policy(seed=0)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (integration tests only): converted once, then read from the cache."""
    from rlhf_lab.policy.models import load_policy

    return load_policy("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (use with `pytestmark = pytest.mark.usefixtures("one_thread")`): the tiny model
    gains nothing from more, and the test machines are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    """The tiny policy's tokenizer (SmolLM2's)."""
    return tiny[1]
