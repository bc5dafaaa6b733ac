"""Settings policy trainers share: the optimisation (`OptimConfig`, extended by DPO's config and by
`OnPolicyConfig`, which PPO's and RLOO's configs extend) and LoRA adapters (`LoraSettings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf_lab.core.config import Config, Seeded, as_config
from rlhf_lab.core.inputs import whole_number
from rlhf_lab.policy.generation import SamplingConfig

__all__ = ["LoraSettings", "OptimConfig", "OnPolicyConfig", "MIXED_PRECISION"]

MIXED_PRECISION = ("no", "bf16", "fp16", "auto")


@dataclass
class LoraSettings(Config):
    """LoRA adapters (peft) on the policy: only they (and a value head) train; the reference is free."""

    r: int = 16
    """Rank of each adapter."""
    alpha: float = 32
    """Scale: the adapter's output is multiplied by alpha / r."""
    dropout: float = 0.0
    """Adapter dropout; keep 0 (PPO checklist 6: dropout off in every model)."""
    target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters: peft's "all-linear" (every one but the output layer) or a list of names."""


def whole_numbers(config, *names: str) -> None:
    """Refuse, in one line, a field among `names` that is set and is not a whole number (2.0, "8" and True are not):
    counts of examples, epochs and steps."""
    for name in names:
        if getattr(config, name) is not None:
            whole_number(getattr(config, name), name)  # the bounds are each field's own check


@dataclass
class OptimConfig(Config, Seeded):
    """How a policy is optimised: the fields PPO, RLOO and DPO share. Saved inside every checkpoint."""

    learning_rate: float = 1e-5
    """AdamW learning rate (about 1e-5 for full fine-tuning of a 135M model with PPO, 1e-6 with DPO; 1e-4 with
    LoRA)."""
    batch_size: int = 8
    """Examples per update, per process: prompts (PPO, RLOO) or preference pairs (DPO)."""
    micro_batch_size: int | None = None
    """Examples per forward/backward pass; gradients are accumulated over the rest. None: the whole (mini)batch."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimiser step."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How replies are sampled (and prompts formatted); the same temperature divides the logits when log-probs are
    recomputed."""
    lora: LoraSettings | None = None
    """LoRA settings (the reference is then the policy with its adapters off), or None for full fine-tuning."""
    mixed_precision: str = "auto"
    """"no", "bf16", "fp16" (a CUDA GPU: float16 autocast, loss scaling) or "auto" (bf16 on a GPU or CPU that multiplies
    bf16 in hardware, fp16 on an older GPU such as a T4, float32 compute elsewhere: `core.hf.resolve_precision`)."""
    seed: int | None = None
    """Seeds sampling, shuffling and initialisation: same seed, same curves (on CPU). None: 0, or the experiment's
    seed inside an `ExperimentConfig`."""

    def __post_init__(self):
        self.sampling = as_config(self.sampling, SamplingConfig)
        self.lora = as_config(self.lora, LoraSettings)
        whole_numbers(self, "batch_size", "micro_batch_size")
        self.micro_batch_size = self.micro_batch_size or self.batch_size
        if min(self.batch_size, self.micro_batch_size) < 1 or self.batch_size % self.micro_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of micro_batch_size "
                             f"({self.micro_batch_size}).")
        if not self.learning_rate > 0 or not self.max_grad_norm > 0:
            raise ValueError("learning_rate and max_grad_norm must be positive.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be 'no', 'bf16', 'fp16' or 'auto', got {self.mixed_precision!r}.")



@dataclass
class OnPolicyConfig(OptimConfig):
    """`OptimConfig` plus what every on-policy method needs: minibatches, epochs, the clip, the KL leash, rollouts.
    `batch_size`, `mini_batch_size` and `micro_batch_size` count prompts."""

    mini_batch_size: int | None = None
    """Prompts per optimiser step; batch_size / mini_batch_size steps per epoch. None: batch_size (one step)."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts, reshuffled every epoch."""
    clip_eps: float = 0.2
    """ε of the clipped policy loss: the ratio π/π_old is kept within [1−ε, 1+ε]."""
    kl_coef: float = 0.05
    """β: weight of the per-token KL penalty (the initial value when kl_target is set)."""
    kl_target: float | None = None
    """Adaptive β (Ziegler et al. 2019): the KL per reply (nats) that β steers towards; None keeps β fixed."""
    kl_horizon: float | None = None
    """Adaptive β: replies over which β can change by about e^(±0.2) (the horizon of Ziegler et al.'s code, which
    used 10,000 with 512 replies an update). None: 10 updates' replies, so that β moves by up to ±2 % an update,
    their K_β = 0.1, whatever the batch size. A horizon of 10,000 replies at 8 replies an update leaves β fixed for
    any run the lab makes (±0.016 % an update)."""
    kl_estimator: str = "k1"
    """KL estimate ("k1" or "k3", summed per reply) that the adaptive β and the KL guard watch; both are logged."""
    kl_limit: float | None = 20.0
    """Stop when the mean KL per reply exceeds this (nats), or 5×kl_target with an adaptive β; None: never."""
    missing_eos_penalty: float | None = 1.0
    """Subtracted from the score of a reply that ran out of tokens without EOS; None: no penalty."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    share_prompt_prefix: bool = True
    """Run the prompt tokens that every row of a batch starts with (a chat template's system prompt) once and let
    the rows continue from their keys and values: the same numbers up to float rounding, in less time
    (`policy_value.response_hidden`)."""
    pack_replies: bool = True
    """With the shared prefix: the rows' own tokens, padding left out, run as one packed row (each row attending to
    the prefix and to itself only), the same numbers up to float rounding in less time (`response_hidden`'s pack)."""
    log_samples_every: int = 10
    """Hand a samples table (prompt, response, score) to the callbacks every this many updates; 0: never."""
    cost_limit: float = 0.05
    """With a cost model (the trainer's `cost`): d, the limit on the expected cost of a reply, E[c] ≤ d (with
    P(flagged) as the cost: the flagged-reply rate allowed). Unused without a cost model."""
    lambda_init: float = 1.0
    """With a cost model: λ at the start, the weight of the cost in the score r − λ·c."""
    lambda_lr: float = 1.0
    """With a cost model: η, λ's step per update, λ ← max(0, λ + η·(mean cost − cost_limit)) (Safe RLHF's
    Lagrange multiplier); 0 keeps λ fixed at lambda_init (a plain penalty)."""

    def __post_init__(self):
        whole_numbers(self, "batch_size", "mini_batch_size", "micro_batch_size", "ppo_epochs", "log_samples_every")
        self.mini_batch_size = self.mini_batch_size or self.batch_size
        self.micro_batch_size = self.micro_batch_size or self.mini_batch_size
        if min(self.batch_size, self.mini_batch_size, self.micro_batch_size, self.ppo_epochs) < 1:
            raise ValueError("batch_size, mini_batch_size, micro_batch_size and ppo_epochs must be at least 1.")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size "
                             f"({self.mini_batch_size}).")
        if self.mini_batch_size % self.micro_batch_size:
            raise ValueError(f"mini_batch_size ({self.mini_batch_size}) must be a multiple of micro_batch_size "
                             f"({self.micro_batch_size}).")
        super().__post_init__()
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}.")
        if self.sampling.greedy or self.sampling.top_k or self.sampling.top_p < 1:
            raise ValueError("On-policy rollouts need plain temperature sampling (temperature > 0, top_k=0, top_p=1): "
                             "the log-probs are recomputed from the full softmax (PPO checklist 2).")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"kl_target must be positive (nats per reply), got {self.kl_target}.")
        if self.kl_horizon is not None and self.kl_horizon <= 0:
            raise ValueError(f"kl_horizon must be positive (replies), or None for 10 updates' replies; got "
                             f"{self.kl_horizon}.")
        if not self.clip_eps > 0:
            raise ValueError(f"clip_eps must be positive (the ratio is kept within [1-clip_eps, 1+clip_eps]), got "
                             f"{self.clip_eps}.")
        if not self.kl_coef >= 0:
            raise ValueError(f"kl_coef (β) must be >= 0: a negative β would reward drifting from the reference; got "
                             f"{self.kl_coef}.")
        if self.kl_limit is not None and not self.kl_limit > 0:
            raise ValueError(f"kl_limit must be positive (nats per reply), or None for no limit; got {self.kl_limit}.")
        if self.missing_eos_penalty is not None and not self.missing_eos_penalty >= 0:
            raise ValueError(f"missing_eos_penalty must be >= 0 (it is subtracted), or None; got "
                             f"{self.missing_eos_penalty}.")
        if self.log_samples_every < 0:
            raise ValueError(f"log_samples_every must be >= 0 (0: never), got {self.log_samples_every}.")
        if min(self.cost_limit, self.lambda_init, self.lambda_lr) < 0:
            raise ValueError(f"cost_limit, lambda_init and lambda_lr must be >= 0, got {self.cost_limit}, "
                             f"{self.lambda_init} and {self.lambda_lr}.")

    @property
    def rollouts_per_update(self) -> int:
        """Replies sampled per update and process."""
        return self.batch_size

    def adaptive_kl_horizon(self, processes: int = 1) -> float:
        """The adaptive β's horizon in replies: `kl_horizon`, or 10 updates' replies over all processes."""
        return self.kl_horizon or 10 * self.rollouts_per_update * processes

    @property
    def n_minibatches(self) -> int:
        return self.batch_size // self.mini_batch_size

    @property
    def grad_accumulation_steps(self) -> int:
        return self.mini_batch_size // self.micro_batch_size
