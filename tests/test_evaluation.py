"""rlhf_lab.loop.evaluation: paired gains and win rates against a hand computation, intervals that can fail."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_lab.loop.evaluation import distinct_n, paired_gain, verdict, win_rate


def test_a_nan_utility_is_refused_not_counted_as_a_loss():
    with pytest.raises(ValueError, match=r"paired_gain: 1 of 6 utilities are NaN; every reply needs a number"):
        paired_gain(np.zeros(3), np.array([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"win_rate: 1 of 4 utilities are NaN"):
        win_rate(np.array([1.0, np.nan]), np.zeros(2))
    assert win_rate(np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 3.0])) == pytest.approx(0.5)  # win, tie, loss


def test_paired_gain_matches_a_hand_computation():
    before = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0]])  # prompt means 2, 0, 2
    after = np.array([[2.0, 4.0], [1.0, -1.0], [5.0, 3.0]])  # prompt means 3, 0, 4
    result = paired_gain(before, after, n_boot=2000, seed=0)
    assert result.gain == pytest.approx((1 + 0 + 2) / 3) and result.win_rate == pytest.approx((1 + 0.5 + 1) / 3)
    assert (result.before, result.after, result.n_prompts, result.samples_per_prompt) == (4 / 3, 7 / 3, 3, 2)
    assert result.ci_low <= result.gain <= result.ci_high and 0 <= result.ci_low  # every resample's mean is ≥ 0
    assert result.ci_high <= 2.0 and result.win_ci_high <= 1.0


def test_the_interval_covers_the_true_gain_about_as_often_as_it_says():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        before = rng.normal(size=(40, 4)) + rng.normal(size=(40, 1))  # prompt difficulty shared before and after
        after = before + 0.2 + rng.normal(scale=0.5, size=(40, 4))
        result = paired_gain(before, after, n_boot=500, seed=trial)
        covered += result.ci_low <= 0.2 <= result.ci_high
    assert 0.88 <= covered / 200 <= 0.99


def test_noise_is_reported_as_no_detectable_change():
    rng = np.random.default_rng(1)
    before = rng.normal(size=(32, 4))
    same = paired_gain(before, before + rng.normal(scale=0.01, size=(32, 4)) * 0, seed=0)
    assert same.gain == 0 and same.verdict == "no detectable change"
    noisy = paired_gain(before, rng.normal(size=(32, 4)), seed=0)
    assert noisy.ci_low < 0 < noisy.ci_high and noisy.verdict == "no detectable change"
    assert paired_gain(before, before + 1, seed=0).verdict == "rose"
    assert paired_gain(before, before - 1, seed=0).verdict == "fell"
    assert verdict(0.1, 0.3, "the taste") == "the taste rose" and "no detectable change" in str(noisy)


def test_bad_input_says_how_to_fix():
    with pytest.raises(ValueError, match="same prompts"):
        paired_gain(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="confidence"):
        paired_gain(np.zeros(3), np.zeros(3), confidence=95)


def test_distinct_n_counts_repeated_ngrams():
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3) and distinct_n([""], 1) == 0.0


def test_t_interval_matches_a_hand_computation():
    from rlhf_lab.loop.evaluation import t_interval, verdict

    mean, lo, hi = t_interval([1.0, 2.0, 4.0])
    s = np.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * s / np.sqrt(3)  # t_{2, 0.975} from a table
    assert mean == pytest.approx(7 / 3) and lo == pytest.approx(7 / 3 - half) and hi == pytest.approx(7 / 3 + half)
    one = t_interval([0.5])
    assert one[0] == 0.5 and np.isnan(one[1]) and np.isnan(one[2])
    same = t_interval([0.25, 0.25, 0.25])  # no spread: not a zero-width interval that would say "rose"
    assert same[0] == 0.25 and np.isnan(same[1]) and np.isnan(same[2])
    assert verdict(same[1], same[2]) == "no detectable change"
    with pytest.raises(ValueError, match="flat list"):
        t_interval([])


# ---- the KL of sampled replies to a reference ------------------------------------------------------------------------


def test_next_token_kl_is_the_categorical_kl():
    import torch
    from torch.distributions import Categorical, kl_divergence

    from rlhf_lab.policy.decoder import next_token_kl

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 11, generator=g) * 3, torch.randn(3, 5, 11, generator=g) * 3
    expected = kl_divergence(Categorical(logits=a / 0.7), Categorical(logits=b / 0.7))
    assert torch.allclose(next_token_kl(a, b, 0.7), expected, atol=1e-5)
    assert torch.allclose(next_token_kl(a, a, 0.7), torch.zeros(3, 5), atol=1e-6)
    assert (next_token_kl(a, b) > 0).all()
    a[..., :2] = -torch.inf  # tokens π never draws (top-k filtered) add nothing; the reference may still draw them
    expected = kl_divergence(Categorical(logits=a), Categorical(logits=b))
    assert torch.allclose(next_token_kl(a, b), expected, atol=1e-5) and expected.isfinite().all()


@pytest.fixture(scope="module")
def policy_and_reference():
    """A peaked tiny policy and a reference: the same network with noise on its weights. Any of 4000 token ids
    ends a reply (the tiny model's next token is spread over most of its 49k), so replies stop at different lengths."""
    import copy

    import torch
    from conftest import peaked_policy

    from rlhf_lab.policy.models import tiny_policy

    tokenizer = tiny_policy()[1]
    policy = peaked_policy(tokenizer, seed=0, scale=4.0)
    policy.generation_config.eos_token_id = [tokenizer.eos_token_id, *range(1000, 5000)]
    reference = copy.deepcopy(policy)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.3 * p.std() * torch.randn(p.shape, generator=g))
    return policy, reference, tokenizer


@pytest.mark.parametrize("n_per_prompt,batch_size", [(1, None), (3, 4)])
def test_the_kl_measured_while_sampling_is_sequence_kls(policy_and_reference, n_per_prompt, batch_size):
    """The lean decoder's reference stepped beside the sampler gives each reply the KL `sequence_kl` computes after,
    in chunks and with replies of several lengths, and the replies are those sampled without a reference."""
    import torch

    from rlhf_lab.loop.evaluation import replies_with_kl, sequence_kl
    from rlhf_lab.policy.generation import SamplingConfig, generate

    policy, reference, tok = policy_and_reference
    prompts = ["Hi!", "What is the capital of France, and why?", "Tell me a joke.", "Why?"]
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.9, decode_precision="model")
    batch, kl = replies_with_kl(policy, reference, tok, prompts, sampling, seed=3, n_per_prompt=n_per_prompt,
                                batch_size=batch_size)
    plain = generate(policy, tok, prompts, sampling, seed=3, n_per_prompt=n_per_prompt, batch_size=batch_size)
    assert batch.responses == plain.responses and plain.kl is None
    assert batch.response_lengths.unique().numel() > 1, "some replies must stop early for the mask to matter"
    after = sequence_kl(policy, reference, batch, 0.9)
    assert kl.shape == (len(prompts) * n_per_prompt,) and (kl > 0.01).all()
    assert torch.allclose(kl, after, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(kl, sequence_kl(policy, reference, batch, 1.5), rtol=1e-2), "the temperature counts"


def test_where_the_lean_decoder_cannot_run_the_kl_is_measured_after(policy_and_reference):
    import torch

    from rlhf_lab.loop.evaluation import replies_with_kl, sequence_kl
    from rlhf_lab.policy.generation import SamplingConfig

    policy, reference, tok = policy_and_reference
    sampling = SamplingConfig(max_new_tokens=6, temperature=0.8, decoder="hf")
    batch, kl = replies_with_kl(policy, reference, tok, ["Hi!", "Tell me a joke."], sampling, seed=0)
    assert batch.kl is None and batch.sampling["decoded_by"] == "hf"
    assert torch.allclose(kl, sequence_kl(policy, reference, batch, 0.8))


def test_sampled_in_bf16_the_kl_is_measured_on_the_models_own_weights_unless_asked(policy_and_reference):
    """A bf16 sampling twin rounds both models: by default the KL is then `sequence_kl`'s on their own (float32)
    weights, exactly; with in_sampler_precision it is measured while sampling, in bf16, close to it."""
    import torch

    from rlhf_lab.loop.evaluation import replies_with_kl, sequence_kl
    from rlhf_lab.policy.generation import SamplingConfig

    policy, reference, tok = policy_and_reference
    sampling = SamplingConfig(max_new_tokens=10, temperature=0.9, decode_precision="bfloat16")
    prompts = ["Hi!", "Tell me a joke.", "Why?"]
    batch, kl = replies_with_kl(policy, reference, tok, prompts, sampling, seed=1, n_per_prompt=2)
    assert batch.sampling["decoded_in"] == "bfloat16" and batch.kl is None
    after = sequence_kl(policy, reference, batch, 0.9)
    assert torch.equal(kl, after)
    fast_batch, fast = replies_with_kl(policy, reference, tok, prompts, sampling, in_sampler_precision=True, seed=1,
                                       n_per_prompt=2)
    assert fast_batch.responses == batch.responses and fast_batch.kl is not None
    assert torch.allclose(fast, after, rtol=0.05, atol=0.05), (fast, after)
