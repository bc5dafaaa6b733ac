"""The on-policy trainer that PPO and RLOO share: everything around their algorithm boxes.

    trainer.train(prompts, n_updates=30)      # a list of prompts, or a function update -> prompts
    trainer.history.to_frame()                 # metrics of every update, TRL's names where they exist
    trainer.save("runs/ppo");  trainer = PPOTrainer.resume("runs/ppo", policy, tokenizer, reward="gold")

A subclass writes `step(prompts)` as its numbered algorithm box from the pieces here, in order:
`sample` (rollouts) → `score` (reward, missing-EOS penalty) → `forward_rollout` (log-probs under the policy and
the reference, values) → `watch_kl` (KL per reply, the guard) → its own advantages → `optimise` (epochs ×
shuffled minibatches × micro-batches of its loss, clipped gradients) → `finish` (adapt β, log). Sampling lives in
`policy.generation`, the tensor maths in `ppo_math`, the models in `policy_value`, logging in `callbacks`, saving
in `trainer_checkpoint` (one checkpoint, or each process's part under FSDP2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rlhf_lab.core.checkpoint import CHECKPOINT
from rlhf_lab.core.errors import TrainingDivergedError
from rlhf_lab.core.files import check_replaceable
from rlhf_lab.core.hf import adamw, causal_lm, disable_dropout, eager_attention_for_cpu_bf16, make_accelerator
from rlhf_lab.core.inputs import prompt_list
from rlhf_lab.core.launch import is_sharded
from rlhf_lab.core.seeding import seed_for, set_seed
from rlhf_lab.policy.generation import generate
from rlhf_lab.policy.models import model_id
from rlhf_lab.reward.sources import as_reward
from rlhf_lab.train.callbacks import MetricsHistory, default_callbacks
from rlhf_lab.train.config import OnPolicyConfig
from rlhf_lab.train.constraint import CostConstraint
from rlhf_lab.train.deepspeed_engine import backward, optimizer_step, prepare, unwrap
from rlhf_lab.train.policy_value import (
    PolicyAndValue,
    policy_and_reference,
    reference_model,
    response_logits,
)
from rlhf_lab.train.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
)
from rlhf_lab.train.sharding import FullWeights
from rlhf_lab.train.trainer_checkpoint import load_trainer, save_trainer, saved_state

__all__ = ["OnPolicyTrainer", "Rollout"]


@dataclass
class Rollout:
    """Step 3's tensors for one batch of replies: the ids every model reads and what they computed on them."""

    batch: object  # the GenerationBatch
    query_response: torch.Tensor  # (B, P+R)
    attention_mask: torch.Tensor  # (B, P+R)
    responses: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) float, 1 on reply tokens
    logp: torch.Tensor  # (B, R) log π_old of each sampled token
    ref_logp: torch.Tensor  # (B, R) log π_ref
    values: torch.Tensor  # (B, R) the value head's estimates (unused by critic-free methods)
    entropy: torch.Tensor  # (B, R)
    first_pass: tuple | None = None  # the policy's (logits, values) with their graph: epoch 1's forward

    @property
    def n_prompt(self) -> int:
        return self.query_response.shape[1] - self.responses.shape[1]


class OnPolicyTrainer:
    """The shared machinery of on-policy RLHF trainers on a causal LM policy (see the module docstring).

    policy, tokenizer: a Hugging Face causal LM and its tokenizer (left padding, pad ≠ EOS: `load_policy`).
        With `config.lora` the policy is wrapped in place with peft adapters.
    reward: anything `as_reward` takes: "gold", a GoldUtility, a function of texts or (prompts, responses), a
        reward model with `.score` (and `.score_tokens` when it shares the policy's tokenizer).
    ref_policy: the reference for full fine-tuning; default a frozen copy of `policy` taken now.
    callbacks: objects with `on_step_end(trainer, metrics)` etc. (see `callbacks`); default a live view in a notebook,
        plain lines elsewhere. `history` (a MetricsHistory, JSONL at `metrics_path` when given) is always kept.
    cost, flag_rule: a cost model (e.g. `reward.cost.CostModel`) whose cost c enters the score as r − λ·c with λ a
        Lagrange multiplier (config's cost_limit, lambda_init, lambda_lr), and a rule whose flagged-reply rate is
        logged (`train.constraint.CostConstraint`); None: neither.
    """

    config_class = OnPolicyConfig
    method = "on-policy"  # names the method in error messages
    reuse_rollout_forward = True
    """With the whole batch in one micro-batch, step 3's forward keeps its graph and doubles as epoch 1's forward (the
    same numbers, one policy forward fewer per update); False runs it without gradients, as a separate pass."""

    def __init__(self, policy, tokenizer, reward, config: OnPolicyConfig | None = None, *, ref_policy=None,
                 critic=None, callbacks=None, metrics_path=None, cost=None, flag_rule=None):
        self.config = config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got "
                            f"{type(config).__name__}.")
        self.seed = config.seed_value
        set_seed(self.seed)
        self.accelerator = make_accelerator(config.mixed_precision)
        self.tokenizer, self.reward = tokenizer, as_reward(reward, tokenizer)
        self.model_id = model_id(policy)
        disable_dropout(policy)
        critic, value_head = self.build_critic(policy, critic)  # before adapters are added to the policy
        policy, self.ref_policy = policy_and_reference(policy, config.lora, ref_policy, self.accelerator.device)
        eager_attention_for_cpu_bf16(self.accelerator, policy, self.ref_policy, critic)
        if config.gradient_checkpointing:
            causal_lm(policy).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if config.lora is not None:
                causal_lm(policy).enable_input_require_grads()
        # Under FSDP2 or ZeRO-3 every process samples from a whole copy of the policy, and the policy's forward runs
        # each row's whole prompt: a shared prefix's extra pass on some processes only would put the layers' gathers
        # out of step.
        self.sharded = is_sharded(self.accelerator)
        self.full_policy = FullWeights(policy, self.accelerator.device) if self.sharded else None
        model = PolicyAndValue(policy, disable_dropout(critic).requires_grad_(True) if critic is not None else None,
                               value_head, share_prefix=config.share_prompt_prefix and not self.sharded,
                               pack=config.pack_replies)
        optimizer = adamw([p for p in model.parameters() if p.requires_grad], config.learning_rate)
        rows = config.micro_batch_size * config.rollouts_per_update // config.batch_size
        self.model, self.optimizer = prepare(self.accelerator, model, optimizer, rows, config.grad_accumulation_steps,
                                             config.max_grad_norm)
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target,
                                            config.adaptive_kl_horizon(self.accelerator.num_processes))
                       if config.kl_target is not None else FixedKLController(config.kl_coef))
        self.constraint = CostConstraint.from_config(cost, flag_rule, config, reduce=lambda x: self.accelerator.reduce(
            x.to(self.accelerator.device), reduction="mean"))
        self.history = MetricsHistory(metrics_path)
        self.callbacks = default_callbacks() if callbacks is None else list(callbacks)
        self.update_ = 0
        self.n_updates_ = None
        self.rollout_ = None
        self.provenance: dict = {}  # where this training sits (an RLHFRun: iteration, start policy, reward model):
        # in every sample row and checkpoint; its numbers (the iteration) in every metrics row too
        self._clock: dict[str, float] = {}

    def build_critic(self, policy, critic):
        """(separate critic trunk or None, value head to start from or None). Critic-free methods take none."""
        if critic is not None:
            raise ValueError(f"{self.method} is critic-free: do not pass a critic.")
        return None, None

    @property
    def policy(self):
        """The policy being trained (peft-wrapped with LoRA), unwrapped from accelerate."""
        return unwrap(self.accelerator, self.model).policy

    def step(self, prompts: list[str]) -> dict:
        """One update (the method's algorithm box); returns its metrics."""
        raise NotImplementedError

    # ---- the pieces of an algorithm box --------------------------------------------------------------------------
    def sample(self, prompts: list[str], n_per_prompt: int = 1):
        """Rollouts: `n_per_prompt` replies per prompt (copies adjacent) from the current policy, seeded by (seed,
        update, process); `generate` cuts each after its first EOS, kept as the last token."""
        cfg, update = self.config, self.update_ + 1
        prompts = prompt_list(prompts, "step() prompts")
        if len(prompts) != cfg.batch_size:
            raise ValueError(f"step() got {len(prompts)} prompts; the config's batch_size is {cfg.batch_size}.")
        self._clock = {"start": time.perf_counter()}
        policy = self.full_policy.refresh(self.policy) if self.sharded else self.policy  # every process gathers
        batch = generate(policy, self.tokenizer, list(prompts), cfg.sampling, n_per_prompt=n_per_prompt,
                         iteration=update, seed=seed_for(self.seed, update, self.accelerator.process_index))
        self._clock["generation"] = time.perf_counter()
        return batch

    def score(self, batch) -> torch.Tensor:
        """The reward's scores of a GenerationBatch's replies minus the missing-EOS penalty where no EOS: (B,), on
        the trainer's device (a non-finite score stops the run)."""
        scores = self.reward(batch)  # (B,)
        if self.config.missing_eos_penalty is not None:
            scores = torch.where(batch.eos.to(scores.device), scores, scores - self.config.missing_eos_penalty)
        scores = scores.to(self.accelerator.device)
        self._check_finite("reward scores", scores)
        self._clock["scoring"] = time.perf_counter()
        return scores

    def forward_rollout(self, batch) -> Rollout:
        """Log-probs of the sampled tokens under the policy and the reference, values and entropy, on
        query+response. With the whole batch in one micro-batch this is also epoch 1's forward (same weights, dropout
        off): it runs with gradients and its graph is kept, one policy forward fewer per update."""
        device = self.accelerator.device
        query_response, attention_mask = batch.query_response_ids.to(device), batch.query_response_mask.to(device)
        responses = batch.response_ids.to(device)
        *outputs, graph = self._forward(query_response, attention_mask, responses,
                                        keep_graph=self.reuse_rollout_forward and
                                        self.config.micro_batch_size == self.config.batch_size)
        self._clock["forward"] = time.perf_counter()
        return Rollout(batch, query_response, attention_mask, responses, batch.response_mask.to(device).float(),
                       *outputs, first_pass=graph)

    def watch_kl(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(KL per reply by k1 (B,), by k3 (B,), the mean of the one `kl_estimator` names); stops the run when that
        mean is past the limit. The mean is over every process's replies (the same on all ranks), so the guard and
        the adaptive β decide alike everywhere."""
        kl = (kl_k1(rollout.logp, rollout.ref_logp) * rollout.mask).sum(1)  # (B,)
        kl_k3_sum = (kl_k3(rollout.logp, rollout.ref_logp) * rollout.mask).sum(1)  # (B,)
        local = (kl if self.config.kl_estimator == "k1" else kl_k3_sum).mean().detach().float()
        watched = self.accelerator.reduce(local.to(self.accelerator.device), reduction="mean").item()
        self._check_kl(watched)
        return kl, kl_k3_sum, watched

    def optimise(self, rollout: Rollout, loss_fn) -> dict:
        """`ppo_epochs` passes of shuffled minibatches, each accumulated over micro-batches, one clipped optimiser
        step per minibatch. `loss_fn(rows, new_logp (b, R), new_values (b, R)) -> (loss, {name: scalar})` is the
        method's loss on rollout rows `rows`; returns the mean of each named statistic."""
        cfg, acc = self.config, self.accelerator
        rows_per_prompt = len(rollout.responses) // cfg.batch_size
        shuffle = torch.Generator().manual_seed(seed_for(self.seed, self.update_ + 1, acc.process_index, 1))
        first_pass, stats = rollout.first_pass, []
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            for minibatch in torch.randperm(len(rollout.responses), generator=shuffle).split(
                    cfg.mini_batch_size * rows_per_prompt):
                micro_batches = minibatch.split(cfg.micro_batch_size * rows_per_prompt)
                for position, rows in enumerate(micro_batches, 1):
                    rows = rows.to(acc.device)
                    if first_pass is not None:  # epoch 1: step 3's forward, rows in this minibatch's order
                        (new_logits, new_values), first_pass = (x[rows] for x in first_pass), None
                    else:
                        with acc.autocast():  # accelerate's forward is autocast already, but not under FSDP2
                            new_logits, new_values = self.model(rollout.query_response[rows],
                                                                rollout.attention_mask[rows], rollout.n_prompt)
                    new_logp = logprobs_from_logits(new_logits, rollout.responses[rows],
                                                    cfg.sampling.temperature)  # (b, R)
                    loss, named = loss_fn(rows, new_logp, new_values)
                    self._check_finite("loss", loss)
                    backward(acc, self.model, loss / cfg.grad_accumulation_steps, position == len(micro_batches))
                    stats.append({k: v.detach().float() for k, v in named.items()})
                self._optimizer_step()
        self.model.eval()
        self._clock["optimisation"] = time.perf_counter()
        return {name: torch.stack([s[name] for s in stats]).mean() for name in stats[0]}

    @staticmethod
    def policy_stats(pg_loss: torch.Tensor, pg_stats: dict) -> dict:
        """`clipped_policy_loss`'s outputs under their metric names."""
        return {"loss/policy_avg": pg_loss, "policy/approxkl_avg": pg_stats["approx_kl"],
                "policy/clipfrac_avg": pg_stats["clipfrac"], "policy/ratio_mean": pg_stats["ratio_mean"],
                "policy/ratio_std": pg_stats["ratio_std"]}

    def finish(self, rollout: Rollout, scores, kl, beta: float, method_metrics: dict) -> dict:
        """Adapt β to the measured KL, count the update, log its metrics (reduced across processes) and return
        them. kl: step `watch_kl`'s triple."""
        kl_k1_sum, kl_k3_sum, watched = kl
        self.kl_ctl.update(watched, len(rollout.responses) * self.accelerator.num_processes)  # all processes' replies
        self.update_ += 1
        mask, batch = rollout.mask, rollout.batch
        metrics = {
            "objective/scores": scores.mean(), "objective/kl": kl_k1_sum.mean(), "objective/kl_k3": kl_k3_sum.mean(),
            "objective/non_score_reward": (-beta * kl_k1_sum).mean(),
            "objective/rlhf_reward": (scores - beta * kl_k1_sum).mean(),
            "objective/entropy": (-rollout.logp * mask).sum(1).mean(),
            "policy/entropy_avg": masked_mean(rollout.entropy, mask), **method_metrics,
            "val/eos_rate": batch.eos.float().mean(), "val/response_length": mask.sum(1).mean(),
            **self.constraint.metrics_,
        }
        return self._log(metrics, beta, int(mask.sum().item()), batch, scores)

    # ---- plumbing ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def kl_to_reference(self, batch) -> torch.Tensor:
        """KL of the current policy to the reference on a GenerationBatch: Σ_t (log π − log π_ref) over each
        reply's tokens (k1, nats per reply), at the sampling temperature. (B,)"""
        device = self.accelerator.device
        logp, ref_logp, *_ = self._forward(batch.query_response_ids.to(device), batch.query_response_mask.to(device),
                                           batch.response_ids.to(device))
        return (kl_k1(logp, ref_logp) * batch.response_mask.to(device)).sum(1)

    def _forward(self, query_response, attention_mask, responses, keep_graph: bool = False) -> tuple:
        """(logp, ref_logp, values, entropy), each (B, R) without gradients, computed in micro-batches, and the
        policy's (logits, values) with their graph when `keep_graph` (one pass over the whole batch), else None."""
        cfg = self.config
        n_prompt = query_response.shape[1] - responses.shape[1]
        self.model.train(keep_graph)  # dropout is off: both modes compute the same; train mode for the graph
        outputs, graph = [], None
        for rows in torch.arange(len(responses)).split(len(responses) if keep_graph else cfg.micro_batch_size):
            ids, attn, tokens = query_response[rows], attention_mask[rows], responses[rows]
            with self.accelerator.autocast(), torch.set_grad_enabled(keep_graph):
                logits, values = self.model(ids, attn, n_prompt)  # (b, R, V), (b, R)
            if keep_graph:
                graph, logits, values = (logits, values), logits.detach(), values.detach()
            self._check_finite("policy logits", logits)
            with torch.no_grad(), self.accelerator.autocast(), self._reference() as ref_lm:
                ref_logits = response_logits(ref_lm, ids, attn, n_prompt, cfg.share_prompt_prefix,
                                             cfg.pack_replies)  # (b, R, V)
            self._check_finite("reference logits", ref_logits)
            t = cfg.sampling.temperature
            outputs.append((logprobs_from_logits(logits, tokens, t), logprobs_from_logits(ref_logits, tokens, t),
                            values.float(), entropy_from_logits(logits, t)))
        self.model.eval()
        return (*(torch.cat(parts) for parts in zip(*outputs)), graph)

    def _optimizer_step(self) -> None:
        """Clip the accumulated gradients to `max_grad_norm` (a non-finite norm stops the run), step, zero them."""
        optimizer_step(self.accelerator, self.model, self.optimizer, self.config.max_grad_norm,
                       lambda norm: self._check_finite("gradient norm", norm))

    def _reference(self):
        """The reference causal LM (a context manager): the frozen copy, or (LoRA) the policy (under FSDP2 its whole
        copy) with its adapters disabled."""
        return reference_model(self.full_policy.module if self.sharded else self.policy, self.ref_policy)

    def _check_finite(self, quantity: str, value: torch.Tensor) -> None:
        if not torch.isfinite(value).all():
            bad = value.detach().float()
            precision = self.accelerator.mixed_precision
            if quantity == "reward scores" and self.update_ == 0:  # before any step: the reward's own output
                raise TrainingDivergedError(
                    f"{self.method} update 1: the reward gave {int((~torch.isfinite(bad)).sum())} of {bad.numel()} "
                    "replies a NaN or infinite score before any training: check the reward (it must return a finite "
                    "number for every reply, e.g. with reward(['a prompt'], ['a reply'])).")
            raise TrainingDivergedError(
                f"{self.method} update {self.update_ + 1}: the {quantity} became non-finite "
                f"({int((~torch.isfinite(bad)).sum())} of {bad.numel()} values are NaN/inf). Try a lower "
                f"learning_rate (now {self.config.learning_rate}) or a lower max_grad_norm (now "
                f"{self.config.max_grad_norm})" + (f", or mixed_precision='no' (float32 compute instead of {precision})."
                                                   if precision in ("bf16", "fp16") else "."))

    def _check_kl(self, kl: float) -> None:
        cfg = self.config
        limits = [x for x in (cfg.kl_limit, 5 * cfg.kl_target if cfg.kl_target and cfg.kl_limit else None) if x]
        if limits and kl > min(limits):
            raise TrainingDivergedError(
                f"{self.method} update {self.update_ + 1}: the KL to the reference exploded to {kl:.2f} nats per reply "
                f"(limit {min(limits):.2f}). Lower the learning_rate (now {cfg.learning_rate}) or raise β (kl_coef, "
                f"now {self.kl_ctl.value:.4g}); raise kl_limit only if this KL is intended.")

    def _log(self, rollout_metrics: dict, beta: float, n_tokens: int, batch, scores) -> dict:
        """Reduce the metrics across processes, add counters and timings, call the callbacks."""
        names, update, clock = list(rollout_metrics), self.update_, self._clock
        values = self.accelerator.reduce(torch.stack([torch.as_tensor(rollout_metrics[k], device=self.accelerator.device,
                                                                      dtype=torch.float32) for k in names]), "mean")
        now = time.perf_counter()
        episodes = update * self.config.rollouts_per_update * self.accelerator.num_processes
        tags = {k: v for k, v in self.provenance.items() if isinstance(v, (int, float))}
        metrics = {**tags, "update": update, "episode": episodes, **dict(zip(names, values.tolist())),
                   "objective/beta": beta, "lr": self.optimizer.param_groups[0]["lr"],
                   "time/generation_s": clock["generation"] - clock["start"],
                   "time/scoring_s": clock["scoring"] - clock["generation"],
                   "time/forward_s": clock["forward"] - clock["scoring"],
                   "time/optimisation_s": clock["optimisation"] - clock["forward"],
                   "time/update_s": now - clock["start"], "time/tokens_per_s": n_tokens / (now - clock["start"])}
        for target in (self.history, *self.callbacks):
            if hasattr(target, "on_step_end"):
                target.on_step_end(self, metrics)
        every = self.config.log_samples_every
        if every and update % every == 0:
            samples = [{**self.provenance, "update": update, "prompt": p, "response": r, "score": s, "eos": e}
                       for p, r, s, e in zip(batch.prompts, batch.responses, scores.tolist(), batch.eos.tolist())]
            for target in (self.history, *self.callbacks):
                if hasattr(target, "on_samples"):
                    target.on_samples(self, samples)
        return metrics

    # ---- the loop ------------------------------------------------------------------------------------------------
    def prompt_batch(self, prompt_source, update: int) -> list[str]:
        """The prompts of update `update` (1-based): from a list, epochs of seeded permutations (stateless, so a
        resumed run draws the same batches); from a function, `prompt_source(update)`."""
        if callable(prompt_source):
            return prompt_list(prompt_source(update), f"prompt_source({update})")
        prompts, size = self.prompt_pool(prompt_source), self.config.batch_size
        per_update = size * self.accelerator.num_processes
        start = (update - 1) * per_update + self.accelerator.process_index * size
        epochs = range(start // len(prompts), (start + size - 1) // len(prompts) + 1)
        order = torch.cat([torch.randperm(len(prompts), generator=torch.Generator().manual_seed(
            seed_for(self.seed, epoch, 2))) for epoch in epochs])
        offset = start - epochs[0] * len(prompts)
        return [prompts[i] for i in order[offset:offset + size].tolist()]

    @staticmethod
    def prompt_pool(prompt_source) -> list[str]:
        """A list of prompts to draw batches from: not one string (its characters), not empty."""
        prompts = prompt_list(prompt_source, "prompt_source")
        if not prompts:
            raise ValueError("prompt_source is an empty list: pass at least one prompt, e.g. [\"How do I make tea?\"]")
        return prompts

    def train(self, prompt_source, n_updates: int, checkpoint_dir=None, checkpoint_every: int = 0):
        """Run updates until `update_ == n_updates` (the run's total, so a resumed trainer finishes the same run).

        prompt_source: a list of prompts or a function update -> prompts. checkpoint_dir: saved there (atomically)
        every `checkpoint_every` updates and at the end. Returns self.
        """
        if not callable(prompt_source):
            prompt_source = self.prompt_pool(prompt_source)
        if checkpoint_dir:  # a folder of the user's is refused now, not after the training up to the first save
            check_replaceable(checkpoint_dir, CHECKPOINT)
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
        """Write a checkpoint atomically (every process calls this): trainable weights (LoRA adapters and value head
        with LoRA; the adapters also under adapter/ in peft's format), optimizer, RNG states, config, β, update count
        and metrics history. The main process writes it; under FSDP2 each process writes its part
        (`train.trainer_checkpoint`)."""
        save_trainer(self, path)

    def load_state(self, path_or_checkpoint):
        """Restore what `save` wrote into this trainer (built with the same base policy and config), under any number
        of processes. Returns self."""
        return load_trainer(self, path_or_checkpoint)

    @classmethod
    def resume(cls, path, policy, tokenizer, reward, config=None, **kwargs):
        """A trainer continuing the run saved at `path`. `policy` must be the same base model the run started
        from (it also gives the reference); `config` defaults to the saved one. kwargs go to the constructor."""
        config = config or cls.config_class.from_dict(saved_state(path)["config"])
        return cls(policy, tokenizer, reward, config, **kwargs).load_state(path)
