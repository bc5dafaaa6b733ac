"""rlhf_lab.policy.decoder: the lean decoder computes what the Hugging Face model computes and samples as `generate`."""

import copy
import dataclasses
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig

import rlhf_lab.policy.decoder as decoder_module
from rlhf_lab.core.hf import position_ids
from rlhf_lab.policy.decoder import (
    LeanDecoder,
    decode,
    distinct_rows,
    next_tokens,
    onednn_packing,
    supports,
    top_k_filter,
    top_p_filter,
    unsupported_reason,
)
from rlhf_lab.policy.generation import SamplingConfig, eos_token_ids, format_prompts, generate
from rlhf_lab.policy.models import tiny_config
from rlhf_lab.policy.prompt_packing import pack_prompts
from rlhf_lab.policy.twin import decoding_model

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Hi!", "What is the capital of France, and why is it famous?", "Tell me a joke."]
GREEDY = SamplingConfig(max_new_tokens=8, temperature=0.0, decode_precision="model")


@pytest.fixture(scope="module")
def tiny_gqa(tiny):
    """A tiny Llama whose 4 query heads share 2 key/value heads (SmolLM2's 9 share 3)."""
    config = tiny_config(tiny[1])
    config.num_key_value_heads = 2
    torch.manual_seed(1)
    return AutoModelForCausalLM.from_config(config).eval(), tiny[1]


@pytest.fixture(params=["tiny", "tiny_gqa", pytest.param("smollm2", marks=pytest.mark.integration)])
def policy(request):
    return request.getfixturevalue(request.param)


def encode(tok, texts, add_special_tokens=True):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    return enc["input_ids"], enc["attention_mask"]


def teacher_forced(model, ids, mask, forced, dtype=None, packed=None):
    """The lean decoder's next-token logits (B, R, V) with the tokens `forced` (B, R) fed after the prompts."""
    decoder = LeanDecoder(model, dtype, packed)
    logits = [decoder.start(ids, mask, forced.shape[1])]
    logits += [decoder.step(forced[:, t]) for t in range(forced.shape[1] - 1)]
    return torch.stack(logits, dim=1)


def hf_logits(model, ids, mask, forced):
    """The HF model's logits from one full forward over prompt + forced tokens, where each forced token is predicted."""
    full, full_mask = torch.cat([ids, forced], dim=1), torch.cat([mask, torch.ones_like(forced)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=full, attention_mask=full_mask, position_ids=position_ids(full_mask)).logits
    return logits[:, ids.shape[1] - 1:-1].float()


def random_tokens(shape, vocab, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def test_teacher_forced_logits_are_the_hf_forwards(policy):
    model, tok = policy
    ids, mask = encode(tok, PROMPTS)
    assert (mask == 0).any(), "prompts of different lengths must be left padded"
    forced = random_tokens((len(PROMPTS), 6), len(tok))
    lean, ref = teacher_forced(model, ids, mask, forced), hf_logits(model, ids, mask, forced)
    assert lean.shape == ref.shape == (len(PROMPTS), 6, model.config.vocab_size)
    assert (lean - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (lean.log_softmax(-1) - ref.log_softmax(-1)).abs().max() < 1e-4


def test_distinct_rows_against_a_loop_by_hand():
    ids = torch.tensor([[0, 5, 6], [1, 2, 3], [0, 5, 6], [0, 4, 4], [1, 2, 3], [0, 5, 6], [0, 4, 4]])
    mask = torch.ones_like(ids)
    mask[6, 0] = 0  # same ids as row 3, a different mask: a different row
    first, inverse = distinct_rows(ids, mask)
    seen = {}
    for i, row in enumerate(torch.cat([ids, mask], 1).tolist()):
        seen.setdefault(tuple(row), i)
    assert first.tolist() == sorted(seen.values()) == [0, 1, 3, 6]
    assert inverse.tolist() == [0, 1, 0, 2, 1, 0, 3]
    assert torch.equal(ids[first][inverse], ids) and torch.equal(mask[first][inverse], mask)
    first, inverse = distinct_rows(ids[:2], mask[:2])  # all distinct: the identity
    assert first.tolist() == inverse.tolist() == [0, 1]


@pytest.mark.parametrize("pack", [False, True])
def test_a_repeated_prompt_is_read_once_and_continues_as_every_row(tiny_gqa, pack):
    """Prompts repeated n times (generate's n_per_prompt) are read once; the logits and every later step equal
    those of each row read as a distinct prompt (the same rows behind a different first token of padding)."""
    model, tok = tiny_gqa
    texts = [PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[1]]
    ids, mask = encode(tok, texts)
    forced = random_tokens((len(texts), 5), len(tok), seed=3)
    decoder = LeanDecoder(model, pack_prompts=pack)
    calls = []
    original = decoder._forward
    decoder._forward = lambda ids_, *a, read=None: calls.append(len(ids_) if read is None else len(read[0])) or \
        original(ids_, *a, read=read)
    logits = [decoder.start(ids, mask, 5)] + [decoder.step(forced[:, t]) for t in range(4)]
    assert calls[0] == 3  # three distinct prompts read, not six (padded: three rows; packed: three read back)
    expected = torch.stack([teacher_forced(model, ids[i:i + 1], mask[i:i + 1], forced[i:i + 1])[0]
                            for i in range(len(texts))])  # each row alone
    lean = torch.stack(logits, dim=1)
    assert (lean - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert not torch.allclose(lean[0], lean[2]), "rows with the same prompt diverge once fed different tokens"


def test_pack_prompts_by_hand():
    ids = torch.tensor([[0, 7, 8, 9, 4], [7, 8, 9, 5, 6], [0, 0, 7, 8, 3]])  # left padded; all start with 7, 8
    mask = (ids != 0).long()
    packed = pack_prompts(ids, mask, width=7)
    assert packed.ids.tolist() == [[7, 8, 9, 4, 9, 5, 6], [7, 8, 3, 0, 0, 0, 0]]  # prompts 0 and 1, then 2
    assert packed.positions.tolist() == [[0, 1, 2, 3, 2, 3, 4], [0, 1, 2, 0, 0, 0, 0]]
    assert packed.allowed[0, 0].int().tolist() == [[1, 0, 0, 0, 0, 0, 0],  # the prefix: causal
                                                   [1, 1, 0, 0, 0, 0, 0],
                                                   [1, 1, 1, 0, 0, 0, 0],  # prompt 0's own part
                                                   [1, 1, 1, 1, 0, 0, 0],
                                                   [1, 1, 0, 0, 1, 0, 0],  # prompt 1's: the prefix and itself
                                                   [1, 1, 0, 0, 1, 1, 0],
                                                   [1, 1, 0, 0, 1, 1, 1]]
    assert packed.allowed[1, 0, 4].int().tolist() == [0, 0, 0, 0, 1, 0, 0]  # padding reads itself
    assert packed.last_row.tolist() == [0, 0, 1] and packed.last_column.tolist() == [3, 6, 2]
    assert packed.real.int().tolist() == [[1, 1, 0, 1, 1], [1, 1, 1, 1, 1], [1, 1, 0, 0, 1]]  # own parts right-aligned
    assert packed.source[packed.real].tolist() == [0, 1, 2, 3, 0, 1, 4, 5, 6, 0, 1, 2]
    assert packed.next_position.tolist() == [4, 5, 3]
    same = torch.tensor([[1, 2], [1, 2]])  # all shared: each prompt keeps its last token of its own
    assert pack_prompts(same, torch.ones_like(same)).ids.tolist() == [[1, 2, 2]]


def test_prompts_packed_with_their_shared_start_give_the_hf_logits(tiny_gqa, monkeypatch):
    """Chat prompts share their template's start: read once, in several packed rows, every row's logits and later
    steps are the HF model's on that row (and the padded pass's)."""
    model, tok = tiny_gqa
    texts = [f"You are a helpful assistant. Please answer briefly. {p}" for p in PROMPTS + ["Why?", "Hello there"]]
    ids, mask = encode(tok, texts)
    layouts = []
    monkeypatch.setattr(decoder_module, "PACKED_WIDTH", 16)
    monkeypatch.setattr(decoder_module, "pack_prompts", lambda *a: layouts.append(pack_prompts(*a)) or layouts[-1])
    forced = random_tokens((len(texts), 4), len(tok), seed=5)
    lean, ref = teacher_forced(model, ids, mask, forced), hf_logits(model, ids, mask, forced)
    padded = torch.stack([LeanDecoder(model, pack_prompts=False).start(ids, mask, 1)], dim=1)
    assert len(layouts) == 1 and len(layouts[0].ids) >= 3  # several packed rows
    assert layouts[0].ids.shape[1] <= 23 and (layouts[0].ids[:, :8] == layouts[0].ids[0, :8]).all()  # the start
    assert (lean - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert (lean[:, :1] - padded).abs().max() <= 1e-5 * ref.abs().max()


def test_rows_kept_continue_as_if_read_alone(tiny_gqa):
    """After `keep_rows`, each kept row's later steps are its own logits (its cache, padding and positions kept)."""
    model, tok = tiny_gqa
    texts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1]]
    ids, mask = encode(tok, texts)
    forced = random_tokens((len(texts), 5), len(tok), seed=4)
    decoder = LeanDecoder(model)
    decoder.start(ids, mask, 5)
    decoder.step(forced[:, 0])
    kept = torch.tensor([3, 0, 2])  # row 1 stops; the others, reordered
    decoder.keep_rows(kept)
    lean = torch.stack([decoder.step(forced[kept, t]) for t in range(1, 4)], dim=1)  # (3, 3, V)
    expected = torch.stack([teacher_forced(model, ids[i:i + 1], mask[i:i + 1], forced[i:i + 1])[0, 2:]
                            for i in kept.tolist()])
    assert (lean - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_a_full_cache_says_so(tiny):
    model, tok = tiny
    ids, mask = encode(tok, PROMPTS)
    decoder = LeanDecoder(model)
    logits = decoder.start(ids, mask, 1)
    decoder.step(logits.argmax(-1))
    with pytest.raises(ValueError, match="larger max_new_tokens"):
        decoder.step(logits.argmax(-1))


def test_a_padding_bug_would_show(tiny):
    """The comparison above has teeth: the same rows read with their padding visible are far off."""
    model, tok = tiny
    ids, mask = encode(tok, PROMPTS)
    forced = random_tokens((len(PROMPTS), 3), len(tok))
    lean = teacher_forced(model, ids, mask, forced)
    seen = hf_logits(model, ids, torch.ones_like(mask), forced)
    assert (lean - seen)[0].abs().max() > 1e-2  # row 0 is the most padded


def greedy_both_ways(model, tok, texts, eos, new_tokens, add_special_tokens=False):
    ids, mask = encode(tok, texts, add_special_tokens)
    with torch.no_grad():
        hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                            eos_token_id=eos, pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    lean = decode(model, ids, mask, max_new_tokens=new_tokens, eos_ids=eos, pad_id=tok.pad_token_id, temperature=0)
    return lean, hf


def stops(ids, eos):
    """Per row: the step of its first EOS id, or None."""
    hits = torch.isin(ids, torch.tensor(eos))
    return [int(row.nonzero()[0]) if row.any() else None for row in hits]


def test_greedy_replies_are_generates_with_rows_stopping_at_different_steps(tiny):
    model, tok = tiny
    free, _ = greedy_both_ways(model, tok, PROMPTS, [], 10, add_special_tokens=True)
    eos = sorted({int(free[1, 0]), int(free[2, -1])})  # "EOS" ids that greedy decoding reaches
    lean, hf = greedy_both_ways(model, tok, PROMPTS, eos, 10, add_special_tokens=True)
    assert torch.equal(lean, hf)
    assert len(set(stops(lean, eos))) == 3, "pick EOS ids that stop the rows at different steps"
    first = stops(lean, eos)[1]
    assert (lean[1, first + 1:] == tok.pad_token_id).all()


def test_sampled_replies_are_generates_draw_for_draw_as_stopped_rows_leave_the_cache(tiny, monkeypatch):
    model, tok = tiny
    ids, mask = encode(tok, PROMPTS * 3, True)  # 9 rows

    def sample_both(eos):
        torch.manual_seed(5)
        lean = decode(model, ids, mask, max_new_tokens=12, eos_ids=eos, pad_id=tok.pad_token_id, temperature=1.0)
        torch.manual_seed(5)
        with torch.no_grad():
            hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                top_p=1.0, max_new_tokens=12, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        return lean, hf[:, ids.shape[1]:]

    free, _ = sample_both([])
    eos = sorted({int(free[0, 1]), int(free[3, 4]), int(free[6, 7])})  # ids some rows draw early
    kept = []
    real_keep_rows = LeanDecoder.keep_rows
    monkeypatch.setattr(LeanDecoder, "keep_rows",
                        lambda self, rows: kept.append(len(rows)) or real_keep_rows(self, rows))
    lean, hf = sample_both(eos)
    assert torch.equal(lean, hf)
    assert len(set(stops(lean, eos))) >= 3 and kept, "pick EOS ids that stop rows at several steps"
    assert kept[-1] < 9  # stopped rows left the cache, and the running rows still drew what generate drew


@pytest.mark.integration
def test_smollm2_greedy_replies_are_generates(smollm2):
    model, tok = smollm2
    prompts = ["Say hi.", "Reply with one word: is the sky blue?", "What is 2 + 2?",
               "Write a long story about a dragon who learns to cook."]
    texts, _ = format_prompts(tok, prompts, SamplingConfig())
    eos = eos_token_ids(model, tok)
    lean, hf = greedy_both_ways(model, tok, texts, eos, 20)
    assert torch.equal(lean, hf)
    assert stops(lean, eos) == [None, 8, 11, None]  # measured once; the equality above is the test


def test_generate_samples_with_the_lean_decoder_and_replies_as_generate(tiny):
    model, tok = tiny
    lean = generate(model, tok, PROMPTS, GREEDY)
    hf = generate(model, tok, PROMPTS, dataclasses.replace(GREEDY, decoder="hf"))
    chunked = generate(model, tok, PROMPTS, GREEDY, batch_size=2)
    assert (lean.sampling["decoded_by"], hf.sampling["decoded_by"]) == ("lean", "hf")
    assert lean.sampling["decoded_in"] == "float32" and lean.sampling["decoder"] == "auto"
    assert torch.equal(lean.response_ids, hf.response_ids) and lean.responses == hf.responses
    assert chunked.responses == lean.responses
    assert [r["sampling"]["decoded_by"] for r in lean.to_records()] == ["lean"] * 3
    assert not lean.response_ids.is_inference()  # usable where autograd records


def test_same_seed_same_replies_and_the_same_draws_as_generate(tiny):
    model, tok = tiny
    sampling = SamplingConfig(max_new_tokens=10, temperature=1.0, decode_precision="model")
    a, b = generate(model, tok, PROMPTS, sampling, seed=3), generate(model, tok, PROMPTS, sampling, seed=3)
    assert a.responses == b.responses and a.sampling["decoded_by"] == "lean"
    assert generate(model, tok, PROMPTS, sampling, seed=4).responses != a.responses
    hf = generate(model, tok, PROMPTS, dataclasses.replace(sampling, decoder="hf"), seed=3)
    assert torch.equal(hf.response_ids, a.response_ids)  # one multinomial draw per step, as generate


def mass_buckets(p: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Each token's bucket: tokens sorted by probability and cut into k runs of about equal mass (a token heavier
    than 1/k fills a bucket alone)."""
    order = p.argsort(descending=True)
    before = p[order].cumsum(0) - p[order]
    buckets = torch.empty_like(order)
    buckets[order] = (before * k).floor().long().clamp(max=k - 1)
    return buckets


def chi_square(samples: torch.Tensor, p: torch.Tensor) -> tuple[float, float]:
    """(χ² of the samples' bucket counts against p's, its 99.9 % point (Wilson–Hilferty))."""
    buckets = mass_buckets(p)
    expected = torch.zeros(10, dtype=torch.float64).index_add_(0, buckets, p.double()) * len(samples)
    observed = torch.bincount(buckets[samples], minlength=10).double()
    used = expected > 0
    stat = float(((observed - expected)[used] ** 2 / expected[used]).sum())
    df = int(used.sum()) - 1
    return stat, df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3


@pytest.fixture(scope="module")
def small_vocab(tiny):
    """A tiny Llama over 256 tokens, its embeddings scaled up (a peaked next-token distribution: 0.47 on one token
    at temperature 0.7, the rest spread), a 6-token prompt repeated 4000 times and the HF model's logits after it:
    many draws of a first token, cheaply."""
    config = tiny_config(tiny[1])
    config.vocab_size = 256
    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(3.0)
        ids = random_tokens((1, 6), 256, seed=1)
        logits = model(input_ids=ids).logits[0, -1].float()
    return model, ids.repeat(4000, 1), torch.ones(4000, 6, dtype=torch.long), logits


def first_tokens(small_vocab, **sampling):
    model, ids, mask, _ = small_vocab
    torch.manual_seed(0)
    return decode(model, ids, mask, max_new_tokens=1, eos_ids=[], pad_id=0, **sampling)[:, 0]


def test_first_tokens_are_drawn_from_softmax_of_logits_over_temperature(small_vocab):
    logits = small_vocab[-1]
    samples = first_tokens(small_vocab, temperature=0.7)
    stat, critical = chi_square(samples, (logits / 0.7).softmax(-1))
    assert stat < critical
    wrong, _ = chi_square(samples, logits.softmax(-1))  # the test has teeth: temperature 1 is rejected
    assert wrong > 10 * critical


def test_top_k_and_top_p_sample_from_the_right_tokens(small_vocab):
    logits = small_vocab[-1]
    top5 = logits.topk(5).indices
    samples = first_tokens(small_vocab, temperature=1.0, top_k=5)
    assert set(samples.tolist()) == set(top5.tolist())
    renormalised = torch.zeros_like(logits)
    renormalised[top5] = logits[top5].softmax(-1)
    stat, critical = chi_square(samples, renormalised)
    assert stat < critical
    p = (logits / 0.7).double().softmax(-1)
    order = p.argsort(descending=True)
    nucleus = set(order[:int((p[order].cumsum(0) < 0.6).sum()) + 1].tolist())  # smallest top set of mass ≥ 0.6
    assert 5 < len(nucleus) < 100
    samples = first_tokens(small_vocab, temperature=0.7, top_p=0.6)
    assert set(samples.tolist()) == nucleus
    renormalised = torch.zeros_like(p)
    renormalised[list(nucleus)] = p[list(nucleus)] / p[list(nucleus)].sum()
    stat, critical = chi_square(samples, renormalised.float())
    assert stat < critical


def test_the_filters_against_a_sort_by_hand():
    scores = torch.randn(50, 300, generator=torch.Generator().manual_seed(0)) * 3
    kept = top_k_filter(scores, 7).isfinite()
    assert torch.equal(kept, scores >= scores.sort(descending=True).values[:, 6:7])
    assert (kept.sum(1) == 7).all()
    for p in (0.05, 0.5, 0.9):
        kept = top_p_filter(scores, p).isfinite()
        probs = scores.double().softmax(-1)
        for row, prob in zip(kept, probs):
            order = prob.argsort(descending=True)
            heavier = prob[order].cumsum(0) - prob[order]  # mass of the tokens above each one
            assert set(row.nonzero().flatten().tolist()) == set(order[heavier < p].tolist())
    assert torch.equal(next_tokens(scores, 0.0), scores.argmax(-1))


def test_bf16_decoding_is_the_bf16_twin_and_follows_training(tiny):
    model = copy.deepcopy(tiny[0])
    tok = tiny[1]
    ids, mask = encode(tok, PROMPTS)
    forced = random_tokens((len(PROMPTS), 4), len(tok))

    def gap():
        twin, _ = decoding_model(model, "bfloat16")
        lean = teacher_forced(model, ids, mask, forced, torch.bfloat16)
        return (lean - hf_logits(twin, ids, mask, forced)).abs().max()

    assert gap() < 2e-2  # bf16 keeps 8 significant bits; the logits are O(1)
    with torch.no_grad():  # a training step, say, on weights the decoder fuses into its own bf16 copies
        model.model.layers[0].mlp.up_proj.weight.mul_(3.0)
        model.model.layers[1].self_attn.k_proj.weight.mul_(3.0)
    before = teacher_forced(tiny[0], ids, mask, forced, torch.bfloat16)
    assert (teacher_forced(model, ids, mask, forced, torch.bfloat16) - before).abs().max() > 0.1
    assert gap() < 2e-2


def test_unpacked_float32_decoding_reads_the_models_own_weights(tiny):
    model, _ = tiny
    decoder = LeanDecoder(model, packed=False)
    q, k, v = decoder.layers[0][1]
    assert q.data_ptr() == model.model.layers[0].self_attn.q_proj.weight.data_ptr()
    assert decoder.head[0].data_ptr() == model.lm_head.weight.data_ptr()


@pytest.mark.skipif(not onednn_packing(torch.float32), reason="this torch has no oneDNN prepacking")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_weights_give_the_plain_products(tiny_gqa, dtype):
    model, tok = tiny_gqa
    if not onednn_packing(dtype):
        pytest.skip(f"this torch has no oneDNN prepacking in {dtype}")
    ids, mask = encode(tok, PROMPTS)
    forced = random_tokens((len(PROMPTS), 4), len(tok))
    packed = teacher_forced(model, ids, mask, forced, dtype, packed=True)
    plain = teacher_forced(model, ids, mask, forced, dtype, packed=False)
    assert LeanDecoder(model, dtype).packed
    assert (packed - plain).abs().max() <= (1e-5 if dtype == torch.float32 else 1e-2) * plain.abs().max()


def test_unsupported_models_are_named_and_sampled_by_generate(tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    assert supports(model) and unsupported_reason(model) is None
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert not supports(lora) and "peft" in unsupported_reason(lora)
    assert not supports(lora.get_base_model())  # its LoRA layers stay in place
    config = LlamaConfig(**tiny_config(tok).to_dict() | {"rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    assert "rope type 'linear'" in unsupported_reason(AutoModelForCausalLM.from_config(config))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tok)))
    assert "model type 'gpt2'" in unsupported_reason(gpt2)
    penalised = copy.deepcopy(model)
    penalised.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in unsupported_reason(penalised)

    batch = generate(lora, tok, PROMPTS, GREEDY)
    assert batch.sampling["decoded_by"] == "hf" and len(batch.responses) == 3
    assert generate(penalised, tok, PROMPTS, GREEDY).sampling["decoded_by"] == "hf"
    with pytest.raises(ValueError, match="decoder='auto' or 'hf'"):
        generate(lora, tok, PROMPTS, dataclasses.replace(GREEDY, decoder="lean"))
    with pytest.raises(ValueError, match="decoder must be one of auto, lean, hf"):
        SamplingConfig(decoder="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_the_logits_are_the_hf_forwards(tiny):
    model = copy.deepcopy(tiny[0]).cuda()
    ids, mask = (t.cuda() for t in encode(tiny[1], PROMPTS))
    forced = random_tokens((len(PROMPTS), 4), len(tiny[1])).cuda()
    lean, ref = teacher_forced(model, ids, mask, forced), hf_logits(model, ids, mask, forced)
    assert (lean - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_the_packing_probe_leaves_the_global_rng_alone():
    onednn_packing.cache_clear()
    state = torch.get_rng_state()
    onednn_packing(torch.float32)
    assert torch.equal(state, torch.get_rng_state())  # else the first generate() of a process would draw differently


def test_autocast_around_the_call_changes_nothing(tiny):
    model, tok = tiny
    ids, mask = encode(tok, PROMPTS)
    forced = random_tokens((len(PROMPTS), 3), len(tok))
    for packed in (False, None):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = teacher_forced(model, ids, mask, forced, packed=packed)
        assert torch.equal(under, teacher_forced(model, ids, mask, forced, packed=packed))
