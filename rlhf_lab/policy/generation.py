"""Batched sampling from a policy: prompts in, a `GenerationBatch` out.

    batch = generate(model, tokenizer, ["What is a good hobby?", "Tell me a joke."], SamplingConfig(temperature=0.7))
    batch.responses          # reply texts: never the prompt, never padding, cut at the first EOS
    batch.response_ids       # (B, R) token ids, right padded; EOS kept as the last real token
    batch.to_records()       # dicts for the feedback store (prompt, response, model, iteration, sampling, eos)

Prompts are wrapped in the chat template of instruct models and left padded, so every row's reply starts at the
same column (PPO checklist, item 1). Sampling is plain temperature sampling unless top-k/top-p are asked for
(checklist, item 2): Hugging Face's default top_k=50 is switched off here. A Llama-family policy is sampled by the lean
decoder of `rlhf_lab.policy.decoder` (the same network and sampling rules, without `model.generate`'s per-step
overhead); any other model, or `decoder="hf"`, by `model.generate`. Each reply records which (`decoded_by`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from rlhf_lab.core.config import Config
from rlhf_lab.core.inputs import is_number, prompt_list, whole_number
from rlhf_lab.core.memory import reuse_freed_memory
from rlhf_lab.core.seeding import seeded
from rlhf_lab.policy.decoder import LeanDecoder, unsupported_reason
from rlhf_lab.policy.models import model_id
from rlhf_lab.policy.twin import PRECISIONS, decoding_dtype, decoding_model

__all__ = ["DECODERS", "SamplingConfig", "GenerationBatch", "format_prompts", "eos_token_ids", "truncate_at_eos",
           "generate", "sampling_config"]

DECODERS = ("auto", "lean", "hf")
"""auto: the lean decoder where it reads the model, else `model.generate`; lean: the lean decoder or an error;
hf: always `model.generate`."""


@dataclass
class SamplingConfig(Config):
    """How replies are sampled. The same settings are recorded with every reply they produce."""

    max_new_tokens: int = 32
    """Upper bound on reply length in tokens; a reply that hits it without EOS has `eos=False`."""
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding."""
    top_k: int = 0
    """Sample among the k most likely tokens only; 0 switches it off (plain temperature sampling, as PPO wants)."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p; 1.0 switches it off."""
    chat_template: bool | None = None
    """Wrap each prompt as a user turn of the tokenizer's chat template; None: when the tokenizer has one."""
    system_prompt: str | None = None
    """A system turn before each prompt (chat template only); None keeps the template's default."""
    max_prompt_tokens: int | None = None
    """Keep only the last this-many tokens of a long prompt; None keeps all."""
    decode_precision: str = "auto"
    """Weights that sample: "auto" (a bfloat16 twin of a float32 model on a CPU with native bf16: with the lean
    decoder 0.44× a bare float32 `generate`, `bench/results/speed_cpu/generate.txt`; else the model's own),
    "model" (always its own), "bfloat16". Each reply records what it was sampled in (`decoded_in`);
    log-probabilities for training are always computed with the model's own weights."""
    decoder: str = "auto"
    """What runs the network token by token, one of DECODERS: "auto" (the lean decoder of rlhf_lab.policy.decoder
    where it reads the model — a plain Llama-family causal LM — else `model.generate`), "lean", "hf" (always
    `model.generate`). Same replies up to float rounding; each reply records which (`decoded_by`)."""

    def __post_init__(self):
        self.max_new_tokens = whole_number(self.max_new_tokens, "max_new_tokens", least=1)
        self.top_k = whole_number(self.top_k, "top_k (0 = off)", least=0)
        if self.max_prompt_tokens is not None:
            self.max_prompt_tokens = whole_number(self.max_prompt_tokens, "max_prompt_tokens (None keeps all)",
                                                  least=1)
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if not is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r:.40}.")
        if not 0 <= self.temperature < math.inf:  # NaN too
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}.")
        if self.chat_template is not None and not isinstance(self.chat_template, bool):
            raise ValueError(f"chat_template must be True, False or None (when the tokenizer has one), got "
                             f"{self.chat_template!r:.40}.")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ValueError(f"system_prompt must be a string or None, got {self.system_prompt!r:.40}.")
        if self.decode_precision not in PRECISIONS:
            raise ValueError(f"decode_precision must be one of {', '.join(PRECISIONS)}, got {self.decode_precision!r}.")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sampling_config(sampling) -> SamplingConfig:
    """`sampling` when it is a SamplingConfig (None: the defaults); a dict or anything else is refused in one line."""
    if sampling is None:
        return SamplingConfig()
    if isinstance(sampling, dict):
        args = ", ".join(f"{k}={v!r}" for k, v in sampling.items())
        raise TypeError(f"sampling must be a SamplingConfig, got a dict: pass SamplingConfig({args})")
    if not isinstance(sampling, SamplingConfig):
        raise TypeError(f"sampling must be a SamplingConfig (or None for the defaults), got "
                        f"{type(sampling).__name__} {sampling!r:.40}")
    return sampling


@dataclass
class GenerationBatch:
    """Prompts and the replies sampled for them, as text and as aligned tensors.

    prompt_ids/prompt_mask are left padded (B, P); response_ids/response_mask are right padded (B, R) with the EOS
    token, when reached, as the last real token. `query_response_ids` is what the policy, reference, value and
    reward models all read.
    """

    prompts: list[str]
    responses: list[str]
    prompt_ids: torch.Tensor  # (B, P)
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, R)
    response_mask: torch.Tensor  # (B, R)
    eos: torch.Tensor  # (B,) bool: the reply ended with EOS rather than hitting max_new_tokens
    model: str
    sampling: dict
    iteration: int = 0
    seed: int | None = None
    metadata: dict = field(default_factory=dict)
    kl: torch.Tensor | None = None
    """(B,) each reply's KL(π ‖ π_ref) to the `reference` that `generate` was given, measured as it was sampled
    (nats; None without a reference, or when the lean decoder could not read both models)."""

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def query_response_ids(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def query_response_mask(self) -> torch.Tensor:  # (B, P + R)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:  # (B,)
        return self.response_mask.sum(dim=1)

    def to_records(self) -> list[dict]:
        """One dict per reply, in the form the feedback store's `add_responses` takes."""
        sampling = dict(self.sampling, seed=self.seed)
        return [
            {"prompt": p, "response": r, "model": self.model, "iteration": self.iteration, "sampling": sampling,
             "eos": bool(e)}
            for p, r, e in zip(self.prompts, self.responses, self.eos.tolist())
        ]


def format_prompts(tokenizer, prompts: list[str], sampling: SamplingConfig) -> tuple[list[str], bool]:
    """The exact text fed to the model for each prompt, and whether the chat template was applied."""
    prompts, sampling = prompt_list(prompts), sampling_config(sampling)
    use_chat = sampling.chat_template
    if use_chat is None:
        use_chat = getattr(tokenizer, "chat_template", None) is not None
    if not use_chat:
        return prompts, False
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat_template=True but this tokenizer has no chat template: set chat_template=False.")
    texts = []
    for prompt in prompts:
        messages = [{"role": "system", "content": sampling.system_prompt}] if sampling.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        texts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return texts, True


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a reply: the tokenizer's EOS and the model's generation-config EOS id(s)."""
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


def truncate_at_eos(response_ids: torch.Tensor, eos_ids: list[int], pad_id: int):
    """Cut each row after its first EOS (kept) and pad the rest. (B, R) -> ids (B, R), mask (B, R), eos (B,)."""
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    seen_before = (is_eos.cumsum(dim=1) - is_eos.long()) > 0  # an EOS appeared strictly earlier in the row
    mask = ~seen_before
    return response_ids.masked_fill(~mask, pad_id), mask.long(), is_eos.any(dim=1)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], sampling: SamplingConfig | None = None, *, seed: int | None = None,
             n_per_prompt: int = 1, batch_size: int | None = None, iteration: int = 0,
             reference=None) -> GenerationBatch:
    """Sample replies to `prompts` (each `n_per_prompt` times, copies adjacent) in batches of `batch_size`.

    seed: same seed, same replies (the caller's global RNG state is left as it was). KV cache on; generation stops
    once every row has produced EOS or `max_new_tokens` tokens.
    reference: a model (the reference policy) whose KL each reply is measured to as it is sampled, in `batch.kl`:
    the lean decoder steps it beside the sampler, in the sampler's precision (`LeanDecoder.generate`). Where the
    lean decoder cannot read both, `batch.kl` stays None (`loop.evaluation.replies_with_kl` then measures it after).
    The replies are the same with or without a reference.
    """
    sampling, prompts = sampling_config(sampling), prompt_list(prompts)
    if not prompts:
        raise ValueError("generate() needs at least one prompt.")
    n_per_prompt = whole_number(n_per_prompt, "n_per_prompt (replies per prompt)", least=1)
    if batch_size is not None:
        batch_size = whole_number(batch_size, "batch_size (replies generated at once; None: all)", least=1)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in eos_token_ids(model, tokenizer):
        raise ValueError("The tokenizer's pad token must differ from EOS: load it with rlhf_lab.policy.models."
                         "load_tokenizer or pass it through rlhf_lab.policy.models.prepare_tokenizer.")
    prompts = [p for p in prompts for _ in range(n_per_prompt)]
    batch_size = batch_size or len(prompts)
    device = next(model.parameters()).device
    if device.type == "cpu":
        reuse_freed_memory()  # KV caches and logits reused, not faulted in afresh (`core.memory`)
    texts, used_chat = format_prompts(tokenizer, prompts, sampling)
    eos_ids = eos_token_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    sampler, decoded_in, decoded_by = _sampler(model, sampling)
    ref_decoder = (LeanDecoder(reference, sampler.dtype) if reference is not None and isinstance(sampler, LeanDecoder)
                   and unsupported_reason(reference) is None else None)
    chunks = []
    with seeded(seed):
        for start in range(0, len(texts), batch_size):
            chunks.append(_generate_chunk(sampler, tokenizer, texts[start:start + batch_size], sampling, eos_ids,
                                          add_special_tokens=not used_chat, device=device, reference=ref_decoder))
    model.train(was_training)
    pad = tokenizer.pad_token_id
    prompt_ids = _cat_padded([c[0] for c in chunks], pad, left=True)
    prompt_mask = _cat_padded([c[1] for c in chunks], 0, left=True)
    response_ids, response_mask, eos = truncate_at_eos(_cat_padded([c[2] for c in chunks], pad, left=False), eos_ids,
                                                       pad)
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    responses = tokenizer.batch_decode(response_ids.masked_fill(is_eos, pad), skip_special_tokens=True)
    settings = {k: v for k, v in asdict(sampling).items() if k not in ("chat_template",)}
    settings["chat_template"], settings["decoded_in"], settings["decoded_by"] = used_chat, decoded_in, decoded_by
    kl = None
    if ref_decoder is not None:  # each drawn token's step, up to and with the reply's EOS
        kl = (_cat_padded([c[3] for c in chunks], 0, left=False) * response_mask).sum(1)  # (B,)
    return GenerationBatch(
        prompts=prompts, responses=[r.strip() for r in responses], prompt_ids=prompt_ids, prompt_mask=prompt_mask,
        response_ids=response_ids, response_mask=response_mask, eos=eos, model=model_id(model), sampling=settings,
        iteration=iteration, seed=seed, kl=kl,
    )


def _sampler(model, sampling: SamplingConfig):
    """(what samples: the lean decoder or an HF model, the precision it samples in, "lean" or "hf")."""
    reason = unsupported_reason(model) if sampling.decoder != "hf" else "decoder='hf'"
    if sampling.decoder == "lean" and reason:
        raise ValueError(f"decoder='lean' cannot read this model ({reason}): use decoder='auto' or 'hf'.")
    if reason:
        return *decoding_model(model, sampling.decode_precision), "hf"
    dtype = decoding_dtype(model, sampling.decode_precision)
    return LeanDecoder(model, dtype), str(dtype).removeprefix("torch."), "lean"


def _generate_chunk(model, tokenizer, texts, sampling: SamplingConfig, eos_ids, add_special_tokens, device,
                    reference=None):
    truncate = sampling.max_prompt_tokens is not None
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                    truncation=truncate, max_length=sampling.max_prompt_tokens).to(device)
    if isinstance(model, LeanDecoder):
        new = model.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=sampling.max_new_tokens,
                             eos_ids=eos_ids, pad_id=tokenizer.pad_token_id, temperature=sampling.temperature,
                             top_k=sampling.top_k, top_p=sampling.top_p, reference=reference)
        return enc["input_ids"], enc["attention_mask"], new, model.step_kl
    kwargs = dict(do_sample=False) if sampling.greedy else dict(
        do_sample=True, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p)
    out = model.generate(**enc, max_new_tokens=sampling.max_new_tokens, eos_token_id=eos_ids,
                         pad_token_id=tokenizer.pad_token_id, use_cache=True, **kwargs)
    return enc["input_ids"], enc["attention_mask"], out[:, enc["input_ids"].shape[1]:], None


def _cat_padded(tensors: list[torch.Tensor], value: int, left: bool) -> torch.Tensor:
    """Concatenate (b_i, T_i) tensors along the batch, padding each to the widest T on the left or the right."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t, (width - t.shape[1], 0) if left else (0, width - t.shape[1]), value=value)
                      for t in tensors])
