"""The policy as one module that scores fixed replies, for the trainers that learn from them (DPO, KTO), and each
process's share of their batches.

    prepared = prepare_scoring_trainer(policy, config, ref_policy, score=pair_logps)
    logps = prepared.model(pairs, pad_id)             # score(policy, pairs, pad_id), through DDP's or FSDP2's forward
    for rows, weights in batch_share(len(batch), rank, world, micro):   # this process's micro-batches
        ...

Why one module: a launcher's engine acts in the forward of the module it wrapped. DDP readies its gradient
all-reduce there and FSDP2 gathers the root's shards (embedding, final norm, output layer) there. A trainer that
reached past the wrapper for the policy's trunk skipped both; under DDP it found no trunk at all and stopped with an
AttributeError.

Under several processes each one takes a share of every batch (`batch_share`), and the processes' figures are
gathered for the metrics (`gather_kept`); the reference's log-probs, computed once up front, are shared out and
gathered the same way (`scored_in_shares`). Each process runs the same number of forwards of the same kind: FSDP2
gathers a layer's weights from all processes at each of its forwards, so a process that ran one more would wait
for the others forever. Under FSDP2 `pair_logps` runs the trunk once: packed, each prompt read once, with SDPA
attention; with other attention each pair's prompt with each reply (its shared prompt pass of one process would run
the trunk once or twice depending on the replies' lengths). A process whose share of a batch is short fills it with
a row at weight 0.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn as nn
from accelerate import Accelerator

from rlhf_lab.core.checkpoint import CHECKPOINT
from rlhf_lab.core.files import check_replaceable
from rlhf_lab.core.hf import adamw, causal_lm, disable_dropout, eager_attention_for_cpu_bf16, make_accelerator
from rlhf_lab.core.launch import is_sharded
from rlhf_lab.core.seeding import set_seed
from rlhf_lab.core.inputs import whole_number
from rlhf_lab.policy.models import model_id
from rlhf_lab.train.callbacks import MetricsHistory
from rlhf_lab.train.deepspeed_engine import prepare, unwrap
from rlhf_lab.train.policy_value import policy_and_reference
from rlhf_lab.train.sharding import FullWeights
from rlhf_lab.train.trainer_checkpoint import load_trainer, save_trainer, saved_state

__all__ = ["ReplyScorer", "PreparedScorer", "prepare_scoring_trainer", "FIT_POSITION", "ScoringTrainer",
           "reference_scores", "batch_share", "gather_kept", "scored_in_shares", "data_fingerprint"]

Score = Callable[..., torch.Tensor]  # score(causal LM, rows, pad_id, sharded=...) -> (N,) sequence log-probs


class ReplyScorer(nn.Module):
    """forward(rows, pad_id) -> `score(causal_lm(policy), rows, pad_id, sharded=sharded)`: the module accelerate
    prepares for DPO and KTO (see the module docstring)."""

    def __init__(self, policy: nn.Module, score: Score, sharded: bool = False):
        super().__init__()
        self.policy, self.score, self.sharded = policy, score, sharded

    def forward(self, rows, pad_id: int) -> torch.Tensor:
        return self.score(causal_lm(self.policy), rows, pad_id, sharded=self.sharded)


class PreparedScorer(NamedTuple):
    accelerator: Accelerator
    model: nn.Module
    """The prepared `ReplyScorer` (DDP- or FSDP2-wrapped under a launcher)."""
    optimizer: torch.optim.Optimizer
    reference: nn.Module | None
    """The frozen reference copy, or None with LoRA (the policy with its adapters off)."""
    full_policy: FullWeights | None
    """Under FSDP2, a whole copy of the policy to sample from (`FullWeights.refresh` before each use); else None."""


def prepare_scoring_trainer(policy: nn.Module, config, ref_policy: nn.Module | None, score: Score) -> PreparedScorer:
    """Everything a trainer that scores fixed replies near a reference needs: dropout off, LoRA adapters or a frozen
    reference copy (`policy_and_reference`), AdamW over the trainable parameters at `config.learning_rate`, and the
    policy as a `ReplyScorer` prepared by accelerate with `config.mixed_precision` (DDP or FSDP2 under a launcher)."""
    accelerator = make_accelerator(config.mixed_precision)
    sharded = is_sharded(accelerator)
    policy, reference = policy_and_reference(disable_dropout(policy), config.lora, ref_policy, accelerator.device)
    eager_attention_for_cpu_bf16(accelerator, policy, reference)
    full_policy = FullWeights(policy, accelerator.device) if sharded else None  # taken before the policy is sharded
    optimizer = adamw([p for p in policy.parameters() if p.requires_grad], config.learning_rate)
    model, optimizer = prepare(accelerator, ReplyScorer(policy, score, sharded), optimizer, config.micro_batch_size, 1,
                               config.max_grad_norm)
    return PreparedScorer(accelerator, model, optimizer, reference, full_policy)


FIT_POSITION = ("fit_start_", "fit_data_")
"""A fit under way: the update it began at and its data's fingerprint (`ScoringTrainer`; in a subclass's counters)."""


class ScoringTrainer:
    """What DPO's and KTO's trainers share (built with `prepare_scoring_trainer`; a subclass sets `config_class` and
    `counters`, the attributes a checkpoint keeps besides the update count): the policy, its whole weights, a fit's
    steps that a resumed trainer has still to make, and checkpoints as PPO's (`train.trainer_checkpoint`): trainable
    weights, optimiser, RNG states, config, update count, counters (a fit's position `fit_start_` and its data's
    fingerprint `fit_data_` among them) and metrics history, each process its part under FSDP2."""

    config_class: type
    counters: tuple[str, ...] = FIT_POSITION
    fit_start_: int | None = None  # no fit under way
    fit_data_: str | None = None

    def __init__(self, policy: nn.Module, tokenizer, config, ref_policy: nn.Module | None, score: Score,
                 metrics_path=None):
        """The start of DPO's and KTO's constructors: the seed (`config.seed_value`) set, the policy, reference and
        AdamW prepared (`prepare_scoring_trainer`), an empty metrics history (appended to `metrics_path` if given)."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__} (or None for the defaults), "
                            f"got {type(config).__name__} {config!r:.40}: pass {self.config_class.__name__}(...)")
        self.config, self.seed, self.tokenizer = config, config.seed_value, tokenizer
        self.model_id = model_id(policy)  # the base policy's name: a checkpoint resumes only on it
        set_seed(self.seed)
        (self.accelerator, self.model, self.optimizer, self.ref_policy,
         self.full_policy) = prepare_scoring_trainer(policy, config, ref_policy, score)
        self.history = MetricsHistory(metrics_path)
        self.update_, self.n_updates_ = 0, None

    @property
    def policy(self):
        """The policy being trained (peft-wrapped with LoRA), unwrapped from accelerate (under FSDP2: its shards)."""
        return unwrap(self.accelerator, self.model).policy

    @property
    def sharded(self) -> bool:
        """Whether the policy is FSDP2 shards or ZeRO-3 parts (then sampling reads `full_policy`)."""
        return self.full_policy is not None

    def whole_policy(self):
        """The policy with whole weights, to sample from or save: under FSDP2 its copy, refreshed from the shards (every
        process must call this: each tensor is gathered); else the policy itself."""
        return self.full_policy.refresh(self.policy) if self.sharded else self.policy

    def fit_epochs(self, epochs) -> int:
        """The passes a `fit` makes: `epochs`, or the config's when None; 0, a negative number or a fraction is
        refused in one line before any work."""
        if epochs is None:
            return self.config.epochs
        return whole_number(epochs, f"epochs (passes over the data; None: the config's {self.config.epochs})",
                            least=1)

    def claim_fit_data(self, fingerprint: str) -> None:
        """Begin a fit on the data of this `data_fingerprint`. A trainer resumed from a checkpoint taken during a fit
        goes on with that fit only on the same data: other data (whose batches its position does not count) is
        refused with a ValueError before any work."""
        if self.fit_start_ is not None and self.fit_data_ not in (None, fingerprint):
            raise ValueError("This trainer resumes a fit on other data (its checkpoint was taken during a fit on "
                             "different examples): fit it on the data that fit began with, or train these with a "
                             "new trainer.")
        self.fit_data_ = fingerprint

    def fit_steps(self, batches: Callable[[int], Iterable], checkpoint_dir=None, checkpoint_every: int = 0):
        """The batches of a fit that remain to be stepped on, in order: `batches(start)` yields every batch of a fit
        begun at update `start` (its order seeded by it). A trainer resumed from a checkpoint taken during a fit skips
        the batches made before it. After each batch the caller steps on, a checkpoint is saved in `checkpoint_dir`
        every `checkpoint_every` updates. A fit stopped by an error forgets its position (the generator is closed as
        the caller's loop unwinds): a trainer resumed from the checkpoint knows it."""
        if checkpoint_dir:  # a folder of the user's is refused now, not after the training up to the first save
            check_replaceable(checkpoint_dir, CHECKPOINT)
        self.fit_start_ = start = self.update_ if self.fit_start_ is None else self.fit_start_
        try:
            for batch in itertools.islice(batches(start), self.update_ - start, None):
                yield batch
                if checkpoint_dir and checkpoint_every and self.update_ % checkpoint_every == 0:
                    self.save(checkpoint_dir)
        finally:  # a fit that stopped leaves its position to its checkpoint, not to the next fit
            self.fit_start_ = self.fit_data_ = None

    def save(self, path) -> None:
        """Write a checkpoint atomically at `path` (every process calls this)."""
        save_trainer(self, path)

    def load_state(self, path_or_checkpoint):
        """Restore what `save` wrote into this trainer (built with the same base policy and config), under any number
        of processes. Returns self."""
        return load_trainer(self, path_or_checkpoint)

    @classmethod
    def resume(cls, path, policy, tokenizer, config=None, **kwargs):
        """A trainer continuing the run saved at `path`: `policy` must be the base model the run started from (it
        also gives the reference); `config` defaults to the saved one; kwargs go to the constructor. A `fit` stopped
        between checkpoints goes on where its checkpoint was: call `fit` again with the same data."""
        config = config or cls.config_class.from_dict(saved_state(path)["config"])
        return cls(policy, tokenizer, config, **kwargs).load_state(path)


def data_fingerprint(*parts) -> str:
    """A short sha256 of the parts' repr (token ids, labels: lists, tuples, ints, bools): which data a fit ran on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def reference_scores(model: nn.Module, policy: nn.Module, reference: nn.Module | None, score: Score, rows,
                     pad_id: int) -> torch.Tensor:
    """The reference's scores of `rows`: `score` on the frozen `reference` (a whole copy in every process), or
    (LoRA, reference None) the prepared scorer `model` with the `policy`'s adapters off, through its forward (under
    FSDP2 every process must then call this with rows of the same shape)."""
    if reference is not None:
        return score(causal_lm(reference), rows, pad_id)
    with policy.disable_adapter():
        return model(rows, pad_id)


def batch_share(n: int, rank: int, world: int, micro: int) -> list[tuple[list[int], list[float]]]:
    """Process `rank`'s micro-batches of a batch of n rows (indices 0..n−1) among `world` processes, as (rows,
    weights): rows rank, rank + world, rank + 2·world, ..., cut into micro-batches of at most `micro`.

    Every process gets the same number of micro-batches of the same sizes, ⌈n / world⌉ rows in all; where its share
    is shorter, row 0 fills in at weight 0 (it runs, as every process must, and counts for nothing). One process:
    the rows in order, in micro-batches of `micro`, every weight 1."""
    size = -(-n // world)
    rows = list(range(rank, n, world))
    weights = [1.0] * len(rows) + [0.0] * (size - len(rows))
    rows += [0] * (size - len(rows))
    return [(rows[s:s + micro], weights[s:s + micro]) for s in range(0, size, micro)]


def gather_kept(accelerator: Accelerator, values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Every process's rows of `values` (n, ...) whose weight (n,) is not 0, gathered (the same tensor on every
    process, rank 0's rows first); in one process, the rows with weight 1 in their order."""
    device = accelerator.device
    values, weights = accelerator.gather(values.to(device).contiguous()), accelerator.gather(weights.to(device))
    return values[weights > 0]


def scored_in_shares(accelerator: Accelerator, n: int, chunk: int, score: Callable[[list[int]], torch.Tensor]):
    """`score(rows)` -> (len(rows), ...) for rows 0..n−1, `chunk` rows at a time, each process scoring its share of
    every chunk (`batch_share`): (n, ...) on every process, in row order. One process: the chunks in order."""
    out = None
    rank, world = accelerator.process_index, accelerator.num_processes
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        [(rows, weights)] = batch_share(size, rank, world, size)
        rows, weights = [start + r for r in rows], torch.tensor(weights)
        values = gather_kept(accelerator, score(rows), weights)
        where = gather_kept(accelerator, torch.tensor(rows), weights).cpu()
        if out is None:
            out = values.new_zeros((n, *values.shape[1:]))
        out[where] = values
    return out
