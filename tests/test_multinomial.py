"""policy.multinomial.draw_one draws what torch.multinomial(probs, 1) draws, from the same generator state, and
leaves the generator where torch leaves it: on peaked, flat and filtered (zero) probabilities, over many draws in a
row (the twister refills its state every 312 uniforms), and right after seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_lab.policy.multinomial import draw_one, exact_here, exponential_race


def torch_draws(probs_list, seed):
    torch.manual_seed(seed)
    tokens = [torch.multinomial(p, num_samples=1).squeeze(1) for p in probs_list]
    return tokens, torch.get_rng_state()


def our_draws(probs_list, seed):
    torch.manual_seed(seed)
    tokens = [draw_one(p) for p in probs_list]
    return tokens, torch.get_rng_state()


def tables(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows, vocab, scale in ((8, 49152, 1.0), (8, 49152, 6.0), (3, 1000, 0.1), (1, 7, 2.0), (16, 50, 20.0)):
        logits = torch.randn(rows, vocab, generator=g) * scale
        out.append(logits.softmax(-1))
    top = torch.randn(4, 300, generator=g)  # top-k filtered: most probabilities exactly 0
    top[top < top.topk(5, dim=-1).values[:, -1:]] = float("-inf")
    out.append(top.softmax(-1))
    return out


def test_this_torch_build_takes_the_fast_path():
    assert exact_here()  # torch 2.13's CPU kernel: a change there turns the fast path off (and this fails)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_draws_and_generator_state_are_torchs(seed):
    probs = tables(seed) * 3  # 18 draws in a row: several refills of the twister's state
    mine, my_state = our_draws(probs, seed)
    theirs, their_state = torch_draws(probs, seed)
    for a, b in zip(mine, theirs):
        assert torch.equal(a, b)
    assert torch.equal(my_state, their_state)  # so whatever draws next draws what it would after torch's


def test_draws_between_other_uses_of_the_generator():
    torch.manual_seed(7)
    probs = tables(7)[1]
    mine = [(draw_one(probs), torch.rand(3)) for _ in range(4)]
    torch.manual_seed(7)
    theirs = [(torch.multinomial(probs, 1).squeeze(1), torch.rand(3)) for _ in range(4)]
    for (a, x), (b, y) in zip(mine, theirs):
        assert torch.equal(a, b) and torch.equal(x, y)


def test_the_race_by_hand():
    probs = np.array([[0.5, 0.3, 0.2]], dtype=np.float32)
    u = np.array([[0.9, 0.1, 0.5]])  # q = -log(1 - u) = 2.303, 0.105, 0.693: ratios 0.217, 2.85, 0.289
    assert exponential_race(probs, u).tolist() == [1]
    assert exponential_race(probs, np.array([[0.9, 0.0, 0.5]])) is None  # u = 0: torch's own draw decides


def test_bad_probabilities_get_torchs_error():
    with pytest.raises(RuntimeError):
        draw_one(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(RuntimeError):
        draw_one(torch.tensor([[0.5, -0.1]]))


def test_other_dtypes_and_shapes_go_to_torch():
    torch.manual_seed(3)
    a = draw_one(tables(3)[2].double())
    torch.manual_seed(3)
    assert torch.equal(a, torch.multinomial(tables(3)[2].double(), 1).squeeze(1))
