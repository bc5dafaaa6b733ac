"""A lean KV-cached decoder for Llama-family causal LMs: the replies `model.generate` samples, in less time.

    if supports(model):
        new_ids = decode(model, input_ids, attention_mask, max_new_tokens=32, temperature=0.7, eos_ids=[2], pad_id=0)

It runs the same network as the Hugging Face model with a handful of torch ops per layer and none of `generate`'s
per-step machinery (cache objects, mask building, logits processors): a KV cache allocated once, the left-padded
prompts read in one pass at the positions their real tokens have alone, then one token per step. On a CPU it also
multiplies by weights prepacked for oneDNN (`onednn_packing`), 1.5–3× faster for these thin products than the
`F.linear` every HF layer calls; on this project's 2-core AMD EPYC that was the larger share of the gain, as the
products, not the overhead, fill most of a step at one thread. Prepacked, fused (q/k/v and gate/up) or rounded
(bf16) weights are copies made from the model at every call, as the policy trains between calls (0.3–0.7 s for
SmolLM2-135M on one busy thread, measured 2026-12); otherwise the decoder reads the model's own tensors.

It computes what the HF model computes (RMSNorm in float32, RoPE from the model's own inverse frequencies, SDPA
attention with key/value heads shared by groups; a float32 step's one query per row as softmax(q·kᵀ·scale + mask)·v
in two products, about 3 ms of a 51 ms step cheaper than SDPA's CPU kernel on SmolLM2) and samples as `generate`
does (temperature, then top-k, then top-p, one `torch.multinomial` draw per step), so the same seed gives the same
replies up to float rounding. `supports` says which models it reads; `rlhf_lab.policy.generation` sends the others
to `model.generate`.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from rlhf_lab.core.hf import position_ids
from rlhf_lab.policy.multinomial import draw_one
from rlhf_lab.policy.prompt_packing import PACKED_WIDTH, pack_prompts

__all__ = ["MODEL_TYPES", "unsupported_reason", "supports", "rms_norm", "rope_tables", "rotate", "top_k_filter",
           "top_p_filter", "next_tokens", "next_token_kl", "onednn_packing", "weights", "linear", "distinct_rows",
           "LeanDecoder", "decode"]

MODEL_TYPES = ("llama",)
"""`config.model_type`s read here (SmolLM2 and the tiny test model are both "llama")."""

NEUTRAL_GENERATION = {"num_beams": 1, "num_return_sequences": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                      "bad_words_ids": None, "min_length": 0, "min_new_tokens": 0, "forced_bos_token_id": None,
                      "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                      "sequence_bias": None, "exponential_decay_length_penalty": None, "min_p": None, "typical_p": 1.0,
                      "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None, "guidance_scale": None,
                      "penalty_alpha": None, "dola_layers": None, "watermarking_config": None}
"""Generation-config settings that `generate` would act on beyond temperature/top-k/top-p: each at a value that
changes nothing (None always does too), or the model goes to `generate`."""


def unsupported_reason(model: nn.Module) -> str | None:
    """Why the lean decoder cannot read `model` (a few words), or None when it can."""
    if hasattr(model, "peft_config") or hasattr(model, "get_base_model"):
        return "a peft model"
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in MODEL_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {', '.join(MODEL_TYPES)}"
    trunk, head = getattr(model, "model", None), getattr(model, "lm_head", None)
    layers = getattr(trunk, "layers", None)
    rotary = getattr(trunk, "rotary_emb", None)
    if layers is None or rotary is None or type(head) is not nn.Linear or head.bias is not None:
        return "not a LlamaForCausalLM layout"
    linears = [m for layer in layers for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                               layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                                               layer.mlp.down_proj)]
    if any(type(m) is not nn.Linear for m in linears) or type(trunk.embed_tokens) is not nn.Embedding:
        return "its projections are not plain nn.Linear (LoRA, quantised?)"
    if any(m.bias is not None for m in linears):
        return "biased projections"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default" or getattr(rotary, "rope_type", "default") != "default":
        return f"rope type {rope_type!r} (only the default RoPE is read)"
    if getattr(config, "hidden_act", None) != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "an MLP other than SiLU-gated"
    if getattr(config, "sliding_window", None) or len(layers) != config.num_hidden_layers:
        return "sliding-window attention or skipped layers"
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1 or next(iter(devices)).type not in ("cpu", "cuda"):
        return f"weights on {', '.join(sorted(str(d) for d in devices))} (one cpu or cuda device only)"
    generation = getattr(model, "generation_config", None)
    for name, neutral in NEUTRAL_GENERATION.items():
        if getattr(generation, name, None) not in (None, neutral):
            return f"generation_config.{name}={getattr(generation, name)!r}"
    return None


def supports(model: nn.Module) -> bool:
    """True when `decode` can sample from `model` (a plain Llama-family causal LM on a CPU or a CUDA device)."""
    return unsupported_reason(model) is None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """y = w ⊙ x / √(mean(x²) + ε), the mean over the last dimension, computed in float32 then cast back (as HF)."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope_tables(inv_freq: torch.Tensor, length: int, scaling: float, dtype: torch.dtype):
    """RoPE tables for positions 0..length−1: cos θ and the signed sin θ of `rotate`, (length, head_dim) each.

    θ_{p,i} = p · f_{i mod d/2} with f the model's inverse frequencies (float32, as HF), both halves alike; the sin
    table's first half is negated so that rotate_half(x) · sin = roll(x, d/2) · signed_sin."""
    freqs = torch.arange(length, device=inv_freq.device, dtype=torch.float32)[:, None] * inv_freq.float()[None]
    angles = torch.cat([freqs, freqs], dim=-1)
    cos, sin = angles.cos() * scaling, angles.sin() * scaling
    half = freqs.shape[-1]
    return cos.to(dtype), torch.cat([-sin[:, :half], sin[:, half:]], dim=-1).to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE: x·cos θ + rotate_half(x)·sin θ, with rotate_half(x) = (−x₂, x₁) = roll(x, d/2) ⊙ (−1, 1)."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest scores of each row (and any tied with the k-th): s_i if s_i ≥ s_(k), else −∞."""
    kth = torch.topk(scores, min(k, scores.shape[-1])).values[..., -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: with the tokens sorted by rising probability π = softmax(s), drop token j when Σ_{i ≤ j} π_i ≤ 1 − p;
    the most probable token always stays (what is left is the smallest top set whose mass reaches p)."""
    ascending, order = torch.sort(scores, descending=False)
    drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - p
    drop[..., -1] = False
    return scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def next_tokens(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """One token per row from (B, V) logits: argmax when temperature is 0, else a draw from
    softmax(filter(logits / T)) with top-k (0 = off) then top-p (1 = off), in `generate`'s order and RNG use."""
    scores = logits.float()
    if temperature == 0:
        return scores.argmax(dim=-1)
    scores = scores / temperature
    if top_k:
        scores = top_k_filter(scores, top_k)
    if top_p < 1:
        scores = top_p_filter(scores, top_p)
    return draw_one(scores.softmax(dim=-1))  # torch.multinomial(·, 1)'s draw, faster on the CPU (`multinomial`)


def next_token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(π ‖ π_ref) = Σ_v π_v (log π_v − log π_ref,v) of next-token distributions π = softmax(z / T), π_ref =
    softmax(z_ref / T), in float32 over the last dimension: (..., V), (..., V) -> (...). A token π never draws
    (z_v = −inf) adds nothing."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float() / temperature, dim=-1)
    p = logp.exp()
    return torch.where(p > 0, p * (logp - ref_logp), 0.0).sum(-1)


@functools.cache
def onednn_packing(dtype: torch.dtype) -> bool:
    """Whether this torch build multiplies by weights prepacked for oneDNN on the CPU in `dtype`: the ops
    `torch.ops.mkldnn._reorder_linear_weight` and `_linear_pointwise` that torch.compile's frozen CPU graphs use.
    For the thin products of decoding they run 1.5–3× faster than `F.linear`, which repacks (bf16) or goes
    through MKL (float32) at every product. Probed once per dtype against `F.linear` (the global RNG untouched)."""
    try:
        w, x = (torch.linspace(-1, 1, n * 16).reshape(n, 16).sin().to(dtype) for n in (24, 3))
        y = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w), None, "none", [], "")
        return torch.allclose(y.float(), F.linear(x, w).float(), rtol=1e-2, atol=1e-2)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@torch.inference_mode()
def weights(model: nn.Module, dtype: torch.dtype, packed: bool = False) -> tuple[list[tuple], tuple]:
    """The model's current weights in `dtype`: per layer (norm₁, W_qkv, W_o, norm₂, W_gate_up, W_down), then
    (embedding, final norm, head); each matrix a tuple of matrices whose products are concatenated.

    Unpacked, in the model's own dtype, these are its own tensors (no copy: they follow training). Otherwise they
    are copies made at each call from its current weights (rounded to `dtype`), q/k/v and gate/up fused into one
    matrix each (one product instead of three or two), and with `packed` every matrix prepacked for oneDNN
    (see `onednn_packing`). The embedding stays the model's own: its few rows are rounded when read."""
    trunk = model.model

    def matrix(*linears):
        ws = [m.weight.detach() for m in linears]
        if not packed and all(w.dtype == dtype for w in ws):
            return tuple(ws)
        fused = torch.cat(ws).to(dtype) if len(ws) > 1 else ws[0].to(dtype)
        return (torch.ops.mkldnn._reorder_linear_weight(fused) if packed else fused,)

    def norm(module):
        return module.weight.detach().to(dtype)

    layers = [(norm(layer.input_layernorm), matrix(a.q_proj, a.k_proj, a.v_proj), matrix(a.o_proj),
               norm(layer.post_attention_layernorm), matrix(m.gate_proj, m.up_proj), matrix(m.down_proj))
              for layer, a, m in ((layer, layer.self_attn, layer.mlp) for layer in trunk.layers)]
    return layers, (trunk.embed_tokens.weight.detach(), norm(trunk.norm), matrix(model.lm_head))


def linear(x: torch.Tensor, matrices: tuple[torch.Tensor, ...], packed: bool = False) -> torch.Tensor:
    """x·[W₁; W₂; …]ᵀ: one product per matrix, concatenated along the last dimension (`packed`: one prepacked)."""
    if packed:
        return torch.ops.mkldnn._linear_pointwise(x, matrices[0], None, "none", [], "")
    if len(matrices) == 1:
        return F.linear(x, matrices[0])
    return torch.cat([F.linear(x, w) for w in matrices], dim=-1)


def distinct_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first (U,), inverse (B,)): the first row of each distinct (ids, mask) row, in order of first appearance, and
    for every row the position in `first` of its copy, so that rows == rows[first][inverse]."""
    rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)  # (B, 2P)
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)  # labels in sorted order: (B,)
    first_of_label = torch.full((int(inverse.max()) + 1,), len(rows), dtype=torch.long, device=rows.device)
    first_of_label.scatter_reduce_(0, inverse, torch.arange(len(rows), device=rows.device), reduce="amin")
    first = first_of_label.sort().values  # (U,) first rows, in the order they appear
    rank = torch.empty_like(first_of_label)
    rank[first_of_label.argsort()] = torch.arange(len(first), device=rows.device)
    return first, rank[inverse]


class LeanDecoder:
    """Samples from a model's current weights in `dtype` (default: the model's own), read once here:

        decoder = LeanDecoder(model)
        new_ids = decoder.generate(input_ids, attention_mask, max_new_tokens=32, eos_ids=[2], pad_id=0)

    or step by step: `start` reads left-padded prompts into a fresh KV cache, `step` appends one token per row;
    each returns the next-token logits (B, V) in float32. Make a new decoder after the model's weights change.
    packed: multiply by weights prepacked for oneDNN (None: on a CPU whose torch has it, see `onednn_packing`).
    pack_prompts: read distinct prompts as packed rows, the tokens they all start with once (`start`)."""

    @torch.inference_mode()
    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None, packed: bool | None = None,
                 pack_prompts: bool = True):
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"The lean decoder cannot read this model ({reason}): sample with decoder='hf'.")
        trunk, config = model.model, model.config
        self.dtype = dtype = dtype or model.lm_head.weight.dtype
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.scale = trunk.layers[0].self_attn.head_dim, trunk.layers[0].self_attn.scaling
        self.eps = trunk.norm.variance_epsilon
        self.inv_freq, self.rope_scaling = trunk.rotary_emb.inv_freq, trunk.rotary_emb.attention_scaling
        if packed is None:
            packed = model.lm_head.weight.device.type == "cpu" and onednn_packing(dtype)
        self.packed, self.pack_prompts = packed, pack_prompts
        self.layers, (self.embed, self.norm, self.head) = weights(model, dtype, packed)
        self.step_kl = None  # (B, R) after `generate` with a reference

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Read left-padded prompts (B, P) into a KV cache with room for `max_new_tokens` more. Each row sees its own
        earlier real tokens at the positions they have alone. A prompt repeated in several rows (replies sampled n
        per prompt) is read once and its cache copied (`distinct_rows`): the same numbers, 1/n of the prompt's
        products. With `pack_prompts` the distinct prompts are read as packed rows, the tokens they all start with
        once (`prompt_packing`); otherwise as the padded batch. -> next-token logits (B, V)."""
        batch, width = input_ids.shape
        first, inverse = distinct_rows(input_ids, attention_mask)  # (U,), (B,)
        self.cos, self.sin = rope_tables(self.inv_freq, width + max_new_tokens, self.rope_scaling, self.dtype)
        ids, mask = input_ids[first], attention_mask[first]
        logits = (self._start_packed if self.pack_prompts and len(first) > 1 else self._start_padded)(
            ids, mask, max_new_tokens)
        if len(first) < batch:
            self.cache = [(keys[inverse], values[inverse]) for keys, values in self.cache]  # (B, ...) each
            self.real, self.positions, logits = self.real[inverse], self.positions[inverse], logits[inverse]
        return logits

    def _new_cache(self, rows: int, columns: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (rows, self.kv_heads, columns, self.head_dim)
        return [tuple(torch.zeros(shape, dtype=self.dtype, device=device) for _ in range(2)) for _ in self.layers]

    def _start_padded(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The padded pass: a padding column sees only itself, which keeps it finite, and no one sees it."""
        (batch, width), device = input_ids.shape, input_ids.device
        self.cache = self._new_cache(batch, width + max_new_tokens, device)
        self.real = torch.zeros(batch, width + max_new_tokens, dtype=torch.bool, device=device)  # real columns
        self.real[:, :width] = real = attention_mask.bool()
        self.length = 0  # cache columns filled
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal & real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        positions = position_ids(attention_mask)
        self.positions = positions[:, -1] + 1  # each row's next position
        return self._forward(input_ids, positions, self._additive(mask[:, None]))

    def _start_packed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The packed pass (`pack_prompts`) into a cache of its own rows, then each prompt's keys and values gathered
        into its cache row: [shared prefix, padding, own part], the new tokens after it."""
        packed, device = pack_prompts(input_ids, attention_mask, PACKED_WIDTH), input_ids.device
        self.cache, self.length = self._new_cache(*packed.ids.shape, device), 0
        logits = self._forward(packed.ids, packed.positions, self._additive(packed.allowed),
                               read=(packed.last_row, packed.last_column))
        self.cache = [(packed.gather(keys, max_new_tokens), packed.gather(values, max_new_tokens))
                      for keys, values in self.cache]
        self.real = torch.cat([packed.real, packed.real.new_zeros(len(packed.real), max_new_tokens)], dim=1)
        self.positions, self.length = packed.next_position, packed.real.shape[1]
        return logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,) at each row's next position. -> next-token logits (B, V)."""
        if self.length == self.real.shape[1]:
            raise ValueError(f"The KV cache is full ({self.length} columns): start() it with a larger max_new_tokens.")
        self.real[:, self.length] = True
        positions, self.positions = self.positions[:, None], self.positions + 1
        return self._forward(tokens[:, None], positions, self._additive(self.real[:, None, None, :self.length + 1]))

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only `rows` (indices into the rows the cache holds now): later steps take and return those rows."""
        self.cache = [(keys[rows], values[rows]) for keys, values in self.cache]
        self.real, self.positions = self.real[rows], self.positions[rows]

    def _additive(self, allowed: torch.Tensor) -> torch.Tensor:
        """0 where a query may look, −∞ elsewhere, in the compute dtype: made once per step, not once per layer."""
        return torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                 read: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """ids, positions (B, T) into cache columns length..length+T−1; mask (B, 1, T, L): 0 where each query looks.
        -> next-token logits at each row's last column, or at the (rows, columns) of `read`."""
        batch, width = ids.shape
        heads, kv, dim, eps = self.heads, self.kv_heads, self.head_dim, self.eps
        group = heads // kv  # query heads per key/value head: a group's queries are stacked along the query axis
        start, end = self.length, self.length + width
        cos, sin = self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)  # (B, T, 1, d)
        if width > 1 and group > 1:
            mask = mask.repeat(1, 1, group, 1)
        packed = self.packed
        with torch.autocast(ids.device.type, enabled=False):  # the dtype asked for, autocast on or not
            x = F.embedding(ids, self.embed).to(self.dtype)
            for (norm1, qkv_w, out_w, norm2, gate_up_w, down_w), (keys, values) in zip(self.layers, self.cache):
                qkv = linear(rms_norm(x, norm1, eps), qkv_w, packed).view(batch, width, heads + 2 * kv, dim)
                qk = rotate(qkv[:, :, :heads + kv], cos, sin)
                keys[:, :, start:end] = qk[:, :, heads:].transpose(1, 2)
                values[:, :, start:end] = qkv[:, :, heads + kv:].transpose(1, 2)
                q = qk[:, :, :heads].transpose(1, 2).reshape(batch, kv, group * width, dim)
                if width == 1 and self.dtype == torch.float32:
                    attended = torch.matmul(torch.matmul(q, keys[:, :, :end].transpose(-1, -2)).mul_(self.scale)
                                            .add_(mask).softmax(-1), values[:, :, :end])
                else:
                    attended = F.scaled_dot_product_attention(q, keys[:, :, :end], values[:, :, :end], attn_mask=mask,
                                                              scale=self.scale)
                attended = attended.reshape(batch, heads, width, dim).transpose(1, 2).reshape(batch, width, heads * dim)
                x = x + linear(attended, out_w, packed)
                gate, up = linear(rms_norm(x, norm2, eps), gate_up_w, packed).chunk(2, dim=-1)
                x = x + linear(F.silu(gate) * up, down_w, packed)
            self.length = end
            last = x[:, -1] if read is None else x[read]
            return linear(rms_norm(last, self.norm, eps), self.head, packed).float()

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, reference: LeanDecoder | None = None) -> torch.Tensor:
        """New tokens (B, R) for left-padded prompts (B, P), as `model.generate(...)[:, P:]` returns them: after a
        row's first EOS id it holds `pad_id`; R < max_new_tokens when every row has stopped sooner.

        reference: a decoder of another model (the reference policy) fed the same tokens step by step; then
        `step_kl` (B, R) holds `next_token_kl` of each step's two next-token distributions at the sampling
        temperature (1 when greedy), unfiltered by top-k/top-p, and 0 after the row's end. Summed over a reply it is
        the reply's KL(π ‖ π_ref) that `loop.evaluation.sequence_kl` computes afterwards, for one reference forward
        and no policy forward.

        Rows that have stopped leave the cache once they are a quarter of the rows it holds (`keep_rows`), so later
        steps compute only the running rows. The draw still covers every row (a stopped row keeps its last logits,
        and its token is replaced by `pad_id`): `torch.multinomial` draws one exponential per (row, token) whatever
        the probabilities, so each running row gets the token it would get with every row computed."""
        with torch.inference_mode():
            logits = self.start(input_ids, attention_mask, max_new_tokens - 1)
            ref_logits = None if reference is None else reference.start(input_ids, attention_mask, max_new_tokens - 1)
            eos = torch.tensor(eos_ids, dtype=torch.long, device=input_ids.device)
            running = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            held = torch.arange(input_ids.shape[0], device=input_ids.device)  # the rows the cache holds, in its order
            out, kls = [], []
            for step in range(max_new_tokens):
                tokens = torch.where(running, next_tokens(logits, temperature, top_k, top_p), pad_id)
                out.append(tokens)
                if reference is not None:
                    kls.append(torch.where(running, next_token_kl(logits, ref_logits, temperature or 1.0), 0.0))
                running &= ~torch.isin(tokens, eos)
                if step == max_new_tokens - 1 or not running.any():
                    break
                if 4 * int((~running[held]).sum()) >= len(held):  # a quarter of the held rows stopped: drop them
                    kept = running[held].nonzero().squeeze(1)
                    for decoder in (self, reference):
                        if decoder is not None:
                            decoder.keep_rows(kept)
                    held = held[kept]
                logits = _step_held(self, tokens, held, logits)
                if reference is not None:
                    ref_logits = _step_held(reference, tokens, held, ref_logits)
            out = torch.stack(out, dim=1)
            step_kl = torch.stack(kls, dim=1) if kls else None  # (B, R)
        self.step_kl = None if step_kl is None else step_kl.clone()
        return out.clone()  # plain tensors, usable where autograd records


def _step_held(decoder: LeanDecoder, tokens: torch.Tensor, held: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Step `decoder`'s held rows with their tokens: next-token logits for every row (B, V), a row no longer held
    keeping its last ones (copied into `logits` only when some row is not held)."""
    if len(held) == len(logits):
        return decoder.step(tokens)
    logits[held] = decoder.step(tokens[held])
    return logits


def decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, dtype: torch.dtype | None = None,
           packed: bool | None = None, **sampling) -> torch.Tensor:
    """`LeanDecoder(model, dtype, packed).generate(input_ids, attention_mask, **sampling)`: new tokens (B, R)."""
    return LeanDecoder(model, dtype, packed).generate(input_ids, attention_mask, **sampling)
