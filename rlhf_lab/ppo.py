"""PPO with a KL leash: optimise a policy against a reward while a per-token KL penalty keeps it near a reference.

    trainer = PPOTrainer(policy, tokenizer, reward="gold", config=PPOConfig(learning_rate=1e-5, kl_coef=0.05))
    trainer.train(prompts, n_updates=30)       # prompts: a list of strings (or a function update -> prompts)
    trainer.history.to_frame()                  # metrics of every update, TRL's names where they exist
    trainer.save("runs/ppo");  trainer = PPOTrainer.resume("runs/ppo", policy, tokenizer, reward="gold")

`PPOTrainer.step` is the algorithm box (numbered steps below, mirrored by the PPO lesson); the tensor maths lives in
`ppo_math`, sampling in `generation`, reward sources in `rewards`, logging in `callbacks`, saving in `checkpoint`.
The value function is a zero-initialised linear head on the policy's trunk ("shared", the light default) or on a
separate trunk ("separate"). With LoRA the reference is the policy with its adapters switched off (one copy of the
weights); with full fine-tuning it is a frozen copy made before training (or the `ref_policy` passed in).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from .callbacks import MetricsHistory, default_callbacks
from .checkpoint import (Checkpoint, load_checkpoint, load_trainable_state_dict, rng_state, save_checkpoint,
                         set_rng_state, trainable_state_dict)
from .generation import SamplingConfig, generate
from .models import model_id
from .ppo_math import (AdaptiveKLController, FixedKLController, clipped_policy_loss, clipped_value_loss,
                       entropy_from_logits, explained_variance, gae, kl_k1, kl_k3, kl_shaped_rewards,
                       logprobs_from_logits, masked_mean, masked_whiten)
from .ppo_models import (PolicyAndValue, _accelerator, _adamw, _causal_lm, _seed_for, disable_dropout,
                         policy_and_reference, reference_model, response_logits)
from .rewards import as_reward, critic_from_reward
from .seeding import set_seed


class TrainingDivergedError(RuntimeError):
    """A quantity became NaN/inf, or the KL to the reference exploded; the message says which and what to try."""


@dataclass
class LoraSettings:
    """LoRA adapters (peft) on the policy: only they (and the value head) train; the reference is free."""

    r: int = 16
    """Rank of each adapter."""
    alpha: float = 32
    """Scale: the adapter's output is multiplied by alpha / r."""
    dropout: float = 0.0
    """Adapter dropout; keep 0 (PPO checklist 6: dropout off in every model)."""
    target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters: peft's "all-linear" (every one but the output layer) or a list of names."""


@dataclass
class PPOConfig:
    """Everything a PPO run needs besides the models and prompts. Saved inside every checkpoint."""

    # ---- optimisation ----
    learning_rate: float = 1e-5
    """AdamW learning rate (about 1e-5 for full fine-tuning of a 135M model, 1e-4 with LoRA)."""
    batch_size: int = 8
    """Prompts (one reply each) per update, per process."""
    mini_batch_size: int | None = None
    """Rows per optimiser step; batch_size / mini_batch_size steps per epoch. None: batch_size (one step)."""
    micro_batch_size: int | None = None
    """Rows per forward/backward pass; gradients are accumulated over a minibatch. None: mini_batch_size."""
    ppo_epochs: int = 4
    """Passes over each batch of rollouts, reshuffled every epoch."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this before each optimiser step."""
    # ---- losses and advantages ----
    clip_eps: float = 0.2
    """ε of the clipped policy loss: the ratio π/π_old is kept within [1−ε, 1+ε]."""
    vf_clip: float = 0.2
    """Clip range of the value loss around the rollout's values."""
    vf_coef: float = 0.1
    """Weight of the value loss beside the policy loss."""
    gamma: float = 1.0
    """Discount per token."""
    lam: float = 0.95
    """λ of generalised advantage estimation."""
    whiten_rewards: bool = False
    """Scale the per-token rewards to unit variance (over valid tokens) before GAE."""
    # ---- reward and the KL leash ----
    kl_coef: float = 0.05
    """β: weight of the per-token KL penalty (the initial value when kl_target is set)."""
    kl_target: float | None = None
    """Adaptive β (Ziegler et al. 2019): the KL per reply (nats) that β steers towards; None keeps β fixed."""
    kl_horizon: float = 10000
    """Adaptive β: replies over which β can change by about e^(±0.2)."""
    kl_estimator: str = "k1"
    """KL estimate ("k1" or "k3", summed per reply) that the adaptive β and the KL guard watch; both are logged."""
    kl_limit: float | None = 20.0
    """Stop when the mean KL per reply exceeds this (nats), or 5×kl_target with an adaptive β; None: never."""
    missing_eos_penalty: float | None = 1.0
    """Subtracted from the score of a reply that ran out of tokens without EOS; None: no penalty."""
    # ---- rollouts ----
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How replies are sampled; the same temperature divides the logits when log-probs are recomputed."""
    # ---- models and devices ----
    value_head: str = "shared"
    """"shared": a linear head on the policy's trunk; "separate": a head on its own trunk (a copy of the policy's,
    or the trainer's `critic` argument)."""
    lora: LoraSettings | None = None
    """LoRA settings, or None for full fine-tuning."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    mixed_precision: str = "auto"
    """"no", "bf16" or "auto" (bf16 on a GPU that supports it, float32 compute elsewhere), via accelerate."""
    share_prompt_prefix: bool = True
    """Run the prompt tokens that every row of a batch starts with (a chat template's system prompt) once and let
    the rows continue from their keys and values: the same numbers up to float rounding, in less time
    (`ppo_models.response_hidden`)."""
    # ---- bookkeeping ----
    seed: int = 0
    """Seeds sampling, shuffling and initialisation: same seed, same curves (on CPU)."""
    log_samples_every: int = 10
    """Hand a samples table (prompt, response, score) to the callbacks every this many updates; 0: never."""

    def __post_init__(self):
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
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
        if self.value_head not in ("shared", "separate"):
            raise ValueError(f"value_head must be 'shared' or 'separate', got {self.value_head!r}.")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}.")
        if self.mixed_precision not in ("no", "bf16", "auto"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'auto', got {self.mixed_precision!r}.")
        if self.sampling.greedy or self.sampling.top_k or self.sampling.top_p < 1:
            raise ValueError("PPO rollouts need plain temperature sampling (temperature > 0, top_k=0, top_p=1): the "
                             "log-probs are recomputed from the full softmax (PPO checklist 2).")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"kl_target must be positive (nats per reply), got {self.kl_target}.")

    @property
    def rollouts_per_update(self) -> int:
        """Replies sampled per update and process (one per prompt)."""
        return self.batch_size

    @property
    def n_minibatches(self) -> int:
        return self.batch_size // self.mini_batch_size

    @property
    def grad_accumulation_steps(self) -> int:
        return self.mini_batch_size // self.micro_batch_size

    @classmethod
    def from_dict(cls, values: dict) -> "PPOConfig":
        """The inverse of `dataclasses.asdict` (what checkpoints store); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


# ----------------------------------------------------------------------------------------------------------------------
# the trainer


class PPOTrainer:
    """RLHF PPO on a causal LM policy (see the module docstring).

    policy, tokenizer: a Hugging Face causal LM and its tokenizer (left padding, pad ≠ EOS: `models.load_policy`).
        With `config.lora` the policy is wrapped in place with peft adapters.
    reward: anything `rewards.as_reward` takes: "gold", a GoldUtility, a function of texts or (prompts, responses),
        a reward model with `.score` (and `.score_tokens` when it shares the policy's tokenizer).
    ref_policy: the reference for full fine-tuning; default a frozen copy of `policy` taken now.
    critic: for `value_head="separate"`, a trunk (a model returning `last_hidden_state`), or "reward" to start from
        the reward model's trunk and head (`rewards.critic_from_reward`); default a copy of the policy's trunk.
    callbacks: objects with `on_step_end(trainer, metrics)` etc. (see `callbacks`); default a live view in a notebook,
        plain lines elsewhere. `history` (a MetricsHistory, JSONL at `metrics_path` when given) is always kept.
    """

    config_class = PPOConfig
    method = "PPO"  # names the method in error messages

    def __init__(self, policy, tokenizer, reward, config: PPOConfig | None = None, *, ref_policy=None, critic=None,
                 callbacks=None, metrics_path=None):
        self.config = config = config or self.config_class()
        set_seed(config.seed)
        self.accelerator = _accelerator(config.mixed_precision)
        self.tokenizer, self.reward = tokenizer, as_reward(reward, tokenizer)
        self.model_id = model_id(policy)
        disable_dropout(policy)
        value_head = None
        if config.value_head == "separate" and critic is None:
            critic = copy.deepcopy(policy.base_model)  # the trunk, copied before any adapters are added
        elif config.value_head == "separate" and isinstance(critic, str) and critic == "reward":
            critic, value_head = critic_from_reward(self.reward)
        elif critic is not None and config.value_head == "shared":
            raise ValueError("A critic was given but value_head='shared': set value_head='separate' to use it.")
        policy, self.ref_policy = policy_and_reference(policy, config.lora, ref_policy, self.accelerator.device)
        if config.gradient_checkpointing:
            _causal_lm(policy).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if config.lora is not None:
                _causal_lm(policy).enable_input_require_grads()
        model = PolicyAndValue(policy, disable_dropout(critic).requires_grad_(True) if critic is not None else None,
                               value_head, share_prefix=config.share_prompt_prefix)
        optimizer = _adamw([p for p in model.parameters() if p.requires_grad], config.learning_rate)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.kl_target is not None else FixedKLController(config.kl_coef))
        self.history = MetricsHistory(metrics_path)
        self.callbacks = default_callbacks() if callbacks is None else list(callbacks)
        self.update_ = 0
        self.n_updates_ = None
        self.rollout_ = None

    # ---- the algorithm box ---------------------------------------------------------------------------------------
    def step(self, prompts: list[str]) -> dict:
        """One PPO update on replies sampled for `prompts`; returns its metrics (also handed to the callbacks)."""
        cfg, acc = self.config, self.accelerator
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step() got {len(prompts)} prompts; the config's batch_size is {cfg.batch_size}.")
        update, device, temperature = self.update_ + 1, acc.device, cfg.sampling.temperature
        model = acc.unwrap_model(self.model)
        times = {"start": time.perf_counter()}

        # 1. Rollout: sample one reply per prompt; `generate` cuts each after its first EOS (kept as last token).
        batch = generate(model.policy, self.tokenizer, list(prompts), cfg.sampling, iteration=update,
                         seed=_seed_for(cfg.seed, update, acc.process_index))
        times["generation"] = time.perf_counter()

        # 2. Score the replies (as text, or as tokens for a reward model sharing the tokenizer); penalise no-EOS.
        scores = self.score(batch).to(device)  # (B,)
        self._check_finite(update, "reward scores", scores)
        times["scoring"] = time.perf_counter()

        # 3. Log-probs of the sampled tokens under the policy and the reference, and values, on query+response.
        query_response = batch.query_response_ids.to(device)  # (B, P+R)
        attention_mask = batch.query_response_mask.to(device)  # (B, P+R)
        responses = batch.response_ids.to(device)  # (B, R)
        mask = batch.response_mask.to(device).float()  # (B, R)
        n_prompt = batch.prompt_ids.shape[1]
        # With the whole batch in one micro-batch this is also epoch 1's forward (same weights): its graph is kept.
        (logp, ref_logp, values, entropy), first_pass = self._rollout_forward(
            update, query_response, attention_mask, responses, n_prompt,
            keep_graph=cfg.micro_batch_size == cfg.batch_size)  # each (B, R)
        times["forward"] = time.perf_counter()

        # 4. Per-token reward: −β·(log π − log π_ref) on every token, plus the score on the last real token.
        beta = self.kl_ctl.value
        rewards, non_score_reward = kl_shaped_rewards(scores, logp, ref_logp, mask, beta)  # (B, R) each
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        kl = (kl_k1(logp, ref_logp) * mask).sum(1)  # (B,) k1 per reply
        kl_k3_sum = (kl_k3(logp, ref_logp) * mask).sum(1)  # (B,)
        watched_kl = (kl if cfg.kl_estimator == "k1" else kl_k3_sum).mean().item()  # what β and the guard follow
        self._check_kl(update, watched_kl)

        # 5. Advantages by GAE (γ, λ), whitened over valid tokens; returns are the value targets.
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # (B, R) each
        advantages = masked_whiten(advantages, mask)
        self.rollout_ = dict(batch=batch, scores=scores, logp=logp, ref_logp=ref_logp, values=values, rewards=rewards,
                             non_score_reward=non_score_reward, advantages=advantages, returns=returns, mask=mask)

        # 6. K epochs × shuffled minibatches × micro-batches: clipped policy and value losses, clipped gradients.
        self.model.train()
        stats = []
        shuffle = torch.Generator().manual_seed(_seed_for(cfg.seed, update, acc.process_index, 1))
        for _ in range(cfg.ppo_epochs):
            for minibatch in torch.randperm(cfg.batch_size, generator=shuffle).split(cfg.mini_batch_size):
                for micro in minibatch.split(cfg.micro_batch_size):
                    micro = micro.to(device)
                    if first_pass is not None:  # epoch 1: step 3's forward, rows in this minibatch's order
                        (new_logits, new_values), first_pass = (x[micro] for x in first_pass), None
                    else:
                        new_logits, new_values = self.model(query_response[micro], attention_mask[micro], n_prompt)
                    new_logp = logprobs_from_logits(new_logits, responses[micro], temperature)  # (b, R)
                    pg_loss, pg_stats = clipped_policy_loss(new_logp, logp[micro], advantages[micro], mask[micro],
                                                            cfg.clip_eps)
                    vf_loss, vf_stats = clipped_value_loss(new_values, values[micro], returns[micro], mask[micro],
                                                           cfg.vf_clip)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    self._check_finite(update, "loss", loss)
                    acc.backward(loss / cfg.grad_accumulation_steps)
                    stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), *pg_stats.values(),
                                              vf_stats["vf_clipfrac"]]))
                self._optimizer_step(update)  # clip the gradient norm, check it, step, zero the gradients
        self.model.eval()
        times["optimisation"] = time.perf_counter()

        # 7. Adapt β to the measured KL; log.
        self.kl_ctl.update(watched_kl, cfg.batch_size)
        self.update_ = update
        pg_loss, vf_loss, approx_kl, clipfrac, ratio_mean, ratio_std, vf_clipfrac = torch.stack(stats).mean(0)
        rollout = {
            "objective/scores": scores.mean(), "objective/kl": kl.mean(), "objective/kl_k3": kl_k3_sum.mean(),
            "objective/non_score_reward": non_score_reward.sum(1).mean(),
            "objective/rlhf_reward": (scores + non_score_reward.sum(1)).mean(),
            "objective/entropy": (-logp * mask).sum(1).mean(), "policy/entropy_avg": masked_mean(entropy, mask),
            "policy/approxkl_avg": approx_kl, "policy/clipfrac_avg": clipfrac, "policy/ratio_mean": ratio_mean,
            "policy/ratio_std": ratio_std, "loss/policy_avg": pg_loss, "loss/value_avg": vf_loss,
            "val/clipfrac_avg": vf_clipfrac, "val/explained_variance": explained_variance(values, returns, mask),
            "val/eos_rate": batch.eos.float().mean(), "val/response_length": mask.sum(1).mean(),
        }
        return self._log(update, rollout, beta, times, int(mask.sum().item()), batch, scores)

    # ---- plumbing ------------------------------------------------------------------------------------------------
    def score(self, batch) -> torch.Tensor:
        """The reward's scores of a GenerationBatch's replies minus the missing-EOS penalty where no EOS: (B,)."""
        scores = self.reward(batch)  # (B,)
        if self.config.missing_eos_penalty is not None:
            scores = torch.where(batch.eos.to(scores.device), scores, scores - self.config.missing_eos_penalty)
        return scores

    @torch.no_grad()
    def kl_to_reference(self, batch) -> torch.Tensor:
        """KL of the current policy to the reference on a GenerationBatch: Σ_t (log π − log π_ref) over each
        reply's tokens (k1, nats per reply), at the sampling temperature. (B,)"""
        device = self.accelerator.device
        (logp, ref_logp, _, _), _ = self._rollout_forward(
            self.update_, batch.query_response_ids.to(device), batch.query_response_mask.to(device),
            batch.response_ids.to(device), batch.prompt_ids.shape[1])
        return (kl_k1(logp, ref_logp) * batch.response_mask.to(device)).sum(1)

    def _rollout_forward(self, update, query_response, attention_mask, responses, n_prompt, keep_graph=False):
        """((logp, ref_logp, values, entropy), each (B, R) without gradients, computed in micro-batches; and the
        policy's (logits, values) with their autograd graph when `keep_graph`, else None).

        keep_graph (for a batch that the optimisation passes whole, as one micro-batch): the first optimisation
        forward sees the same weights and, with dropout off, computes exactly this forward, so it is run once, on
        the whole batch, with gradients, and its graph kept. That saves one forward pass of the policy per update."""
        cfg = self.config
        self.model.train(keep_graph)  # dropout is off: both modes compute the same; train mode for the graph
        outputs, graph = [], None
        for rows in torch.arange(len(responses)).split(len(responses) if keep_graph else cfg.micro_batch_size):
            ids, attn, tokens = query_response[rows], attention_mask[rows], responses[rows]
            with self.accelerator.autocast(), torch.set_grad_enabled(keep_graph):
                logits, values = self.model(ids, attn, n_prompt)  # (b, R, V), (b, R)
            if keep_graph:
                graph, logits, values = (logits, values), logits.detach(), values.detach()
            self._check_finite(update, "policy logits", logits)
            with torch.no_grad(), self.accelerator.autocast(), self._reference() as ref_lm:
                ref_logits = response_logits(ref_lm, ids, attn, n_prompt, cfg.share_prompt_prefix)  # (b, R, V)
            self._check_finite(update, "reference logits", ref_logits)
            t = cfg.sampling.temperature
            outputs.append((logprobs_from_logits(logits, tokens, t), logprobs_from_logits(ref_logits, tokens, t),
                            values.float(), entropy_from_logits(logits, t)))
        self.model.eval()
        return [torch.cat(parts) for parts in zip(*outputs)], graph

    def _optimizer_step(self, update: int) -> None:
        """Clip the accumulated gradients to `max_grad_norm` (a non-finite norm stops the run), step, zero them."""
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self._check_finite(update, "gradient norm", grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _reference(self):
        """The reference causal LM (a context manager): the frozen copy, or (LoRA) the policy with its adapters
        disabled."""
        return reference_model(self.accelerator.unwrap_model(self.model).policy, self.ref_policy)

    def _check_finite(self, update: int, quantity: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value).all():
            bad = value.detach().float()
            bf16 = self.accelerator.mixed_precision == "bf16"
            raise TrainingDivergedError(
                f"{self.method} update {update}: the {quantity} became non-finite ({int((~torch.isfinite(bad)).sum())} "
                f"of {bad.numel()} values are NaN/inf). Try a lower learning_rate (now {self.config.learning_rate}) "
                f"or a lower max_grad_norm (now {self.config.max_grad_norm})"
                + (", or mixed_precision='no' (float32 compute instead of bf16)." if bf16 else "."))

    def _check_kl(self, update: int, kl: float) -> None:
        cfg = self.config
        limits = [x for x in (cfg.kl_limit, 5 * cfg.kl_target if cfg.kl_target and cfg.kl_limit else None) if x]
        if limits and kl > min(limits):
            raise TrainingDivergedError(
                f"{self.method} update {update}: the KL to the reference exploded to {kl:.2f} nats per reply (limit "
                f"{min(limits):.2f}). Lower the learning_rate (now {cfg.learning_rate}) or raise β (kl_coef, now "
                f"{self.kl_ctl.value:.4g}); raise kl_limit only if this KL is intended.")

    def _log(self, update, rollout, beta, times, n_tokens, batch, scores) -> dict:
        """Reduce the metrics across processes, add counters and timings, call the callbacks."""
        names = list(rollout)
        values = self.accelerator.reduce(torch.stack([torch.as_tensor(rollout[k], device=self.accelerator.device,
                                                                      dtype=torch.float32) for k in names]), "mean")
        now = time.perf_counter()
        episodes = update * self.config.rollouts_per_update * self.accelerator.num_processes
        metrics = {"update": update, "episode": episodes,
                   **dict(zip(names, values.tolist())), "objective/beta": beta,
                   "lr": self.optimizer.param_groups[0]["lr"],
                   "time/generation_s": times["generation"] - times["start"],
                   "time/scoring_s": times["scoring"] - times["generation"],
                   "time/forward_s": times["forward"] - times["scoring"],
                   "time/optimisation_s": times["optimisation"] - times["forward"],
                   "time/update_s": now - times["start"], "time/tokens_per_s": n_tokens / (now - times["start"])}
        for target in (self.history, *self.callbacks):
            if hasattr(target, "on_step_end"):
                target.on_step_end(self, metrics)
        every = self.config.log_samples_every
        if every and update % every == 0:
            samples = [{"update": update, "prompt": p, "response": r, "score": s, "eos": e} for p, r, s, e in
                       zip(batch.prompts, batch.responses, scores.tolist(), batch.eos.tolist())]
            for target in (self.history, *self.callbacks):
                if hasattr(target, "on_samples"):
                    target.on_samples(self, samples)
        return metrics

    # ---- the loop ------------------------------------------------------------------------------------------------
    def prompt_batch(self, prompt_source, update: int) -> list[str]:
        """The prompts of update `update` (1-based): from a list, epochs of seeded permutations (stateless, so a
        resumed run draws the same batches); from a function, `prompt_source(update)`."""
        if callable(prompt_source):
            return list(prompt_source(update))
        prompts, size = list(prompt_source), self.config.batch_size
        per_update = size * self.accelerator.num_processes
        start = (update - 1) * per_update + self.accelerator.process_index * size
        epochs = range(start // len(prompts), (start + size - 1) // len(prompts) + 1)
        order = torch.cat([torch.randperm(len(prompts), generator=torch.Generator().manual_seed(
            _seed_for(self.config.seed, epoch, 2))) for epoch in epochs])
        offset = start - epochs[0] * len(prompts)
        return [prompts[i] for i in order[offset:offset + size].tolist()]

    def train(self, prompt_source, n_updates: int, checkpoint_dir=None, checkpoint_every: int = 0) -> "PPOTrainer":
        """Run updates until `update_ == n_updates` (the run's total, so a resumed trainer finishes the same run).

        prompt_source: a list of prompts or a function update -> prompts. checkpoint_dir: saved there (atomically)
        every `checkpoint_every` updates and at the end. Returns self.
        """
        self.n_updates_ = n_updates
        for callback in self.callbacks:
            getattr(callback, "on_train_begin", lambda trainer: None)(self)
        try:
            while self.update_ < n_updates:
                self.step(self.prompt_batch(prompt_source, self.update_ + 1))
                if checkpoint_dir and checkpoint_every and self.update_ % checkpoint_every == 0:
                    self.save(checkpoint_dir)
            if checkpoint_dir:
                self.save(checkpoint_dir)
        finally:
            for callback in self.callbacks:
                getattr(callback, "on_train_end", lambda trainer: None)(self)
        return self

    # ---- checkpoints ---------------------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write a checkpoint atomically: trainable weights (LoRA adapters and value head with LoRA; the adapters
        also under adapter/ in peft's format), optimizer, RNG states, config, β, update count and metrics history.
        Only the main process writes."""
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        state = {"config": asdict(self.config), "update": self.update_, "kl_coef": self.kl_ctl.value,
                 "model_id": self.model_id, "history": self.history.state_dict()}
        model = self.accelerator.unwrap_model(self.model)
        adapter = (lambda directory: model.policy.save_pretrained(directory / "adapter")) if self.config.lora else None
        save_checkpoint(path, tensors=trainable_state_dict(model), state=state, optimizer=self.optimizer.state_dict(),
                        rng=rng_state(), extra=adapter)

    def load_state(self, path_or_checkpoint) -> "PPOTrainer":
        """Restore what `save` wrote into this trainer (built with the same base policy and config)."""
        ckpt = path_or_checkpoint if isinstance(path_or_checkpoint, Checkpoint) else load_checkpoint(path_or_checkpoint)
        load_trainable_state_dict(self.accelerator.unwrap_model(self.model), ckpt.tensors)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.kl_ctl.value = ckpt.state["kl_coef"]
        self.update_ = ckpt.state["update"]
        self.history.load_state_dict(ckpt.state["history"])
        set_rng_state(ckpt.rng)
        return self

    @classmethod
    def resume(cls, path, policy, tokenizer, reward, config: PPOConfig | None = None, **kwargs) -> "PPOTrainer":
        """A trainer continuing the run saved at `path`. `policy` must be the same base model the run started
        from (it also gives the reference); `config` defaults to the saved one. kwargs go to the constructor."""
        ckpt = load_checkpoint(path)
        config = config or cls.config_class.from_dict(ckpt.state["config"])
        return cls(policy, tokenizer, reward, config, **kwargs).load_state(ckpt)
