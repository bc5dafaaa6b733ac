"""One RLHF run, iteration after iteration, with every artefact kept in a run directory.

    run = RLHFRun.create("runs/demo", ExperimentConfig(iterations=2))
    run.run()                      # iteration k: sample → feedback → reward model → PPO → evaluate
    RLHFRun.open("runs/demo").run(iterations=3)   # reopen after a crash or a restart and go on
    run.close()                    # one kernel at a time works in a run: another's open is refused until then

The run directory (nothing in it is half-written: files are replaced atomically, iterations are marked done last):

    config.json            the ExperimentConfig
    feedback.db            the judgment store (the notebook's raters and the simulated crowd write here)
    ppo_metrics.jsonl      every PPO update of every iteration on one time axis, `update` (`ppo_metrics()`: iteration)
    samples.jsonl          PPO's rollout replies every `log_samples_every` updates (update, prompt, response, score)
    evaluation.csv         one row per iteration (0 = the initial policy) on the fixed eval prompts
    iter_001/              eval_samples.jsonl (with the policy that wrote them), reward_model/, reward_model_data.json
                           (the judgments, annotators, iterations and models it was fitted on), ppo/ (checkpoint), DONE

Every iteration keeps its policy's weights in ppo/; only the last completed one keeps the optimizer state the run
resumes from (AdamW's moments are twice the weights: 1.1 GB per iteration for SmolLM2-135M; `drop_optimizer_state`).

A learner's run (`FeedbackConfig(learner="me")`) learns one person's taste: they judge each iteration's pairs at a
rater before the iteration runs (when they judged fewer than `learner_minimum`, a simulated stand-in judges them, and
the run says so), the reward model learns their judgments, and the crowd's only as much as `crowd_weight` says.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf_lab.core.checkpoint import drop_optimizer_state, tensor_bytes
from rlhf_lab.core.files import ensure_free_space, read_json, write_atomic
from rlhf_lab.core.locks import FolderLock
from rlhf_lab.feedback.crowd import SimulatedCrowd
from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.preferences import pairs_origin
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.loop.disagreement import most_disputed
from rlhf_lab.loop.evaluation import PairedResult, distinct_n, paired_gain, replies_with_kl
from rlhf_lab.loop.learner import (crowd_pairs, learner_or_stand_in, learner_pairs, round_judge, stand_in_taste,
                                   training_pairs)
from rlhf_lab.loop.run_config import STRATEGIES, ExperimentConfig, FeedbackConfig
from rlhf_lab.loop.run_folder import ITERATION, delete_run, eval_records, iteration_dir, policy_after
from rlhf_lab.policy.generation import GenerationBatch, generate
from rlhf_lab.policy.models import load_policy, model_id
from rlhf_lab.policy.prompts import load_prompts
from rlhf_lab.reward.embedding import EmbeddingRewardModel
from rlhf_lab.reward.ensemble import build_reward_model, pessimistic_reward
from rlhf_lab.reward.evaluation import cross_validate, evaluate_rewards
from rlhf_lab.reward.sources import as_reward
from rlhf_lab.train.callbacks import TRACKERS, default_callbacks, tracker_callbacks
from rlhf_lab.train.ppo import PPOTrainer

__all__ = ["STRATEGIES", "FeedbackConfig", "ExperimentConfig", "RLHFRun"]

HELD_OUT_FOLDS = 5
"""Cross-validation folds (by prompt) of an embedding reward model's held-out accuracy."""


class RLHFRun:
    """Owns one RLHF run: its config, store, policy per iteration, reward models and metrics (see module docstring)."""

    def __init__(self, path: str | Path, config: ExperimentConfig, *, callbacks=None, log=print):
        self.path, self.config = Path(path), config
        self.lock = FolderLock(self.path, f"the run in {self.path}")  # before anything is read, deleted or rewritten
        try:
            self.log = log or (lambda *_: None)  # a line per stage ("iteration 1/2: ..."); None: silent
            self.gold = GoldUtility()
            self.train_prompts, self.eval_prompts = self.prompt_sets(config)  # what can fail first, before any write
            policy, self.tokenizer = load_policy(config.policy)
            self.trackers = tracker_callbacks(config.report_to, self.path)
            self.store = FeedbackStore(self.path / "feedback.db")
            if self.trackers:
                callbacks = [*(default_callbacks() if callbacks is None else callbacks), *self.trackers]
            self.trainer = PPOTrainer(policy, self.tokenizer, self.gold, config.seeded(config.ppo),
                                      callbacks=callbacks, metrics_path=self.path / "ppo_metrics.jsonl")
            self.reward_model = None
            self.rm_report: dict = {}  # the latest reward model's held-out figures, added to evaluation rows
            self.iteration = 0
            last = self.completed_iterations()
            if last:
                self._restore(last)
            else:  # an iteration 1 that stopped midway: its metrics are made again, not appended twice
                self.trainer.history.rewrite()
        except BaseException:
            self.lock.release()  # a failed open holds no lock (a traceback Jupyter keeps would keep it held)
            raise

    # ---- creating and reopening ----------------------------------------------------------------------------------
    @classmethod
    def create(cls, path, config: ExperimentConfig | None = None, *, overwrite: bool = False, **kwargs) -> "RLHFRun":
        """Start a new run in `path` (refused if a run is already there, unless overwrite=True). The prompt sets
        and trackers are checked before anything is written or deleted; a create that fails later removes what it
        wrote (and only that), so the corrected call works without overwrite=True."""
        path, config = Path(path), config or ExperimentConfig()
        cls.prompt_sets(config)
        tracker_callbacks([name for name in config.report_to if name not in TRACKERS], path)  # unknown: refused
        lock = None
        if (path / "config.json").exists():
            if not overwrite:
                raise FileExistsError(f"{path} already holds a run: reopen it with RLHFRun.open({str(path)!r}) or "
                                      "pass overwrite=True to start over (its data will be deleted).")
            lock = FolderLock(path, f"the run in {path}")  # never delete a run another kernel works in
            delete_run(path)
        made = [p for p in (path, *path.parents) if not p.exists()]  # the folders this create makes, if it does
        before = set(path.iterdir()) if path.is_dir() else set()
        path.mkdir(parents=True, exist_ok=True)
        try:
            write_atomic(path / "config.json", json.dumps(config.to_dict(), indent=2))
            return cls(path, config, **kwargs)
        except BaseException:
            for entry in set(path.iterdir()) - before:  # what this create wrote: the user's other files stay
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            for folder in made:  # innermost first; only while empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        finally:
            if lock is not None:
                lock.release()  # the run holds its own

    def close(self) -> None:
        """Give the run folder back (another kernel may open it now) and close the store; reopen with `open`."""
        self.store.close()
        self.lock.release()

    @staticmethod
    def prompt_sets(config: ExperimentConfig) -> tuple[list[str], list[str]]:
        """The run's training prompts and its held-out evaluation prompts (an unknown prompt_set, or more
        eval_prompts than the set holds, raises ValueError saying what to change)."""
        train = load_prompts(config.prompt_set, split="train", max_words=config.max_prompt_words)
        return train, load_prompts(config.prompt_set, split="eval", max_words=config.max_prompt_words,
                                   n=config.eval_prompts, seed=config.seed)

    @classmethod
    def open(cls, path, **kwargs) -> "RLHFRun":
        """Reopen a run; it continues after its last completed iteration."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"No run at {path} (no config.json): create one with RLHFRun.create({str(path)!r}).")
        return cls(path, ExperimentConfig.from_dict(read_json(path / "config.json")), **kwargs)

    def iteration_dir(self, k: int) -> Path:
        return iteration_dir(self.path, k)

    def completed_iterations(self) -> int:
        """The last iteration whose DONE marker was written (0 when none)."""
        return max((k for k, folder in self._iteration_folders() if (folder / "DONE").is_file()), default=0)

    def _iteration_folders(self) -> list[tuple[int, Path]]:
        """(k, iter_k folder) of every iteration folder; another name that starts with iter_ is not one."""
        return [(int(match[1]), p) for p in self.path.glob("iter_*") if (match := ITERATION.fullmatch(p.name))]

    def _restore(self, k: int) -> None:
        """Load the PPO state and reward model of completed iteration k; later, unfinished work is redone (its
        items and judgments stay in the store and are reused)."""
        for j, stale in self._iteration_folders():
            if j > k:
                shutil.rmtree(stale)
        self.trainer.load_state(self.iteration_dir(k) / "ppo")
        self._drop_older_optimizer_states(k)  # a crash may have come between DONE and the drop
        self.trainer.history.rewrite()  # drop the metrics an interrupted iteration appended after the checkpoint
        kind = EmbeddingRewardModel if self.config.reward_kind == "embedding" else type(
            build_reward_model(self.config.reward))
        self.reward_model = kind.load(self.iteration_dir(k) / "reward_model")
        self.trainer.reward = self.ppo_reward()
        self.iteration = k

    @property
    def policy(self):
        """The current policy (the PPO trainer's, adapters included when LoRA is on)."""
        return self.trainer.policy

    # ---- one iteration -------------------------------------------------------------------------------------------
    def run(self, iterations: int | None = None) -> pd.DataFrame:
        """Run iterations until `iterations` (default: the config's) are complete; returns the evaluation table."""
        target = self._target = iterations or self.config.iterations
        self._check_disk(target)
        if not (self.path / "evaluation.csv").exists():
            self.log(f"iteration 0: the initial policy on {len(self.eval_prompts)} held-out prompts × "
                     f"{self.config.eval_samples} replies")
            self.evaluate(0)
        while self.iteration < target:
            self.run_iteration()
        return self.evaluation()

    def _check_disk(self, target: int) -> None:
        """Refuse at once, not after minutes of work, when the disk cannot hold the checkpoints still to come: each
        iteration's trainable weights, and at the end one more optimizer state (AdamW: twice the weights) beside the
        one it replaces, which goes once the new iteration is done (`core.files.ensure_free_space`)."""
        left = target - self.iteration
        if left > 0:
            weights = tensor_bytes([p for p in self.trainer.model.parameters() if p.requires_grad])
            ensure_free_space(self.path, (left + 2) * weights, f"{left} more iteration{'s' * (left > 1)} of the run "
                              f"in {self.path} (each keeps its policy's weights, the last its optimizer state too)")

    def run_iteration(self) -> dict:
        """One round: sample → feedback → reward model → PPO → evaluate. Returns the evaluation row."""
        k = self.iteration + 1
        of = f"iteration {k}/{max(k, getattr(self, '_target', self.config.iterations))}"
        self.iteration_dir(k).mkdir(parents=True, exist_ok=True)
        self.log(f"{of}: sampling {self.config.feedback.pairs_per_iteration} pairs of replies from the policy")
        items = self.propose_items(k)  # 1. pairs of replies from the current policy
        fb = self.config.feedback
        if fb.annotators and (fb.learner is None or fb.crowd_weight):
            self.log(f"{of}: {fb.annotators} simulated annotators judge them")
        self.collect_feedback(items)  # 2. the crowd, or the learner (people may have judged some already)
        self.log(f"{of}: fitting the reward model on " + ("every judgment so far" if fb.learner is None else
                 "the learner's judgments so far" + (f" and the crowd's × {fb.crowd_weight:g}"
                                                          if fb.crowd_weight else "")))
        self.fit_reward_model(k)  # 3. a reward model on every judgment so far
        accuracy, best = self.rm_report.get("rm/val_accuracy"), self.rm_report.get("rm/gold_accuracy")
        if accuracy is not None and not pd.isna(accuracy):
            self.log(f"{of}: the reward model agrees with {accuracy:.0%} of the held-out judgments"
                     + ("" if best is None or pd.isna(best) else f" (the gold utility itself: {best:.0%})"))
        self.log(f"{of}: {self.config.ppo_updates} PPO updates against it")
        self.optimise(k)  # 4. PPO from the current policy, KL to the initial one
        self.log(f"{of}: evaluating on the held-out prompts")
        row = self.evaluate(k)  # 5. the fixed eval prompts
        write_atomic(self.iteration_dir(k) / "DONE", json.dumps({"update": self.trainer.update_}))
        self.iteration = k
        self._drop_older_optimizer_states(k)
        return row

    def _drop_older_optimizer_states(self, k: int) -> None:
        """Delete the optimizer state of every iteration before k (done: the run resumes from k's), keeping weights."""
        for j in range(1, k):
            drop_optimizer_state(self.iteration_dir(j) / "ppo")

    def propose_items(self, k: int) -> list:
        """Pairwise items for iteration k, chosen by `feedback.strategy`; an interrupted iteration's items are reused."""
        existing = self.store.items(kind="pairwise", iteration=k)
        if existing:
            return existing
        fb, rng = self.config.feedback, np.random.default_rng([self.config.seed, k])
        idx = rng.choice(len(self.train_prompts), fb.pairs_per_iteration,
                         replace=len(self.train_prompts) < fb.pairs_per_iteration)
        prompts = [self.train_prompts[i] for i in idx]
        seed = int(rng.integers(2**31))
        if fb.strategy == "temperatures":
            cool, hot = (self._sample(prompts, k, seed + j, temperature=t) for j, t in enumerate(fb.temperatures))
            records = [r for pair in zip(cool.to_records(), hot.to_records()) for r in pair]
        else:
            n = fb.candidates if fb.strategy == "disagreement" else 2
            records = self._sample(prompts, k, seed, n_per_prompt=n).to_records()
            if n > 2:
                records = most_disputed(records, n, rng, self.reward_model)
        ids = self.store.add_responses(records)
        pairs = [ids[i:i + 2][::1 if rng.random() < 0.5 else -1] for i in range(0, len(ids), 2)]  # A/B order random
        return [self.store.get_item(i) for i in self.store.add_items(pairs, kind="pairwise")]  # all or none

    def _sample(self, prompts, k, seed, n_per_prompt=1, temperature=None) -> GenerationBatch:
        """Replies from the current policy with the PPO rollout settings (`ppo.sampling`), or another temperature."""
        sampling = self.config.ppo.sampling
        if temperature is not None:
            sampling = replace(sampling, temperature=temperature)
        batch = generate(self.policy, self.tokenizer, prompts, sampling, seed=seed, n_per_prompt=n_per_prompt,
                         iteration=k)
        return replace(batch, model=policy_after(model_id(self.policy), k - 1))  # k samples k − 1's policy

    def collect_feedback(self, items) -> int:
        """Judgments of `items`; returns how many are new. The simulated crowd judges them (skipping what each
        annotator has judged); in a learner's run, `learner.learner_or_stand_in` first, and the crowd only when
        `crowd_weight` > 0."""
        fb, new = self.config.feedback, 0
        if fb.learner is not None:
            new = learner_or_stand_in(self.store, items, fb, seed=self.config.seed, log=self.log)
            if not fb.crowd_weight:
                return new
        if fb.annotators == 0:
            return new
        crowd = SimulatedCrowd(n=fb.annotators, rationality=fb.rationality, gold=self.gold,
                               seed=self.config.seed)
        return new + len(crowd.annotate(self.store, items))

    # ---- a learner's run (loop.learner) ---------------------------------------------------------------------------
    def learner_pairs(self) -> pd.DataFrame:
        """A learner's run: the learner's preference pairs so far (each iteration's from its `round_judge`)."""
        return learner_pairs(self.store, self.config.feedback)

    def crowd_pairs(self) -> pd.DataFrame:
        """A learner's run: the preference pairs of everyone but the learner and their stand-in (the crowd)."""
        return crowd_pairs(self.store, self.config.feedback)

    # ---- reward model and policy ---------------------------------------------------------------------------------
    def fit_reward_model(self, k: int):
        """Fit the reward model on `learner.training_pairs` (or warm-start it on this iteration's), normalise it on
        the current policy's replies, save it in the iteration directory. Held-out figures: the network's on its
        validation prompts; the embedding model's cross-validated by prompt on the learner's pairs (or all)."""
        fb, pairs = self.config.feedback, training_pairs(self.store, self.config.feedback)
        embedding = self.config.reward_kind == "embedding"
        stage = self.config.seeded(self.config.embedding if embedding else self.config.reward)
        stage = replace(stage, seed=stage.seed + k)
        if embedding:
            def fit(train):
                return EmbeddingRewardModel(stage).fit(train)
            model = fit(pairs)
        elif self.config.warm_start_reward and self.reward_model is not None:
            model = self.reward_model.fit(pairs[pairs["iteration"] == k])
        else:
            model = build_reward_model(stage).fit(pairs, progress=False)
        replies = [(r.prompt, r.text) for item in self.store.items(kind="pairwise", iteration=k) for r in item.responses]
        model.normalize([p for p, _ in replies], [t for _, t in replies])
        model.save(self.iteration_dir(k) / "reward_model")
        write_atomic(self.iteration_dir(k) / "reward_model_data.json", json.dumps(
            {**pairs_origin(pairs), "normalised_on": f"iteration {k}'s pairwise replies"}, indent=1))
        self.reward_model = model
        yours = pairs if fb.learner is None else self.learner_pairs()
        if not embedding:
            report = model.evaluate(gold=self.gold)
        else:  # every judgment of the learner's, by a model that never saw its prompt
            table = cross_validate(yours, fit, folds=HELD_OUT_FOLDS, seed=self.config.seed, train=pairs) \
                if yours["prompt"].nunique() >= 2 else yours.iloc[:0].assign(r_chosen=[], r_rejected=[])
            report = evaluate_rewards(table, table["r_chosen"].to_numpy(), table["r_rejected"].to_numpy(),
                                      gold=self.gold)
        self.rm_report = {"rm/val_accuracy": report.accuracy, "rm/gold_accuracy": report.gold_accuracy,
                          "rm/val_log_loss": report.log_loss, "rm/pairs": len(pairs)}
        if fb.learner is not None:
            self.rm_report.update({"rm/learner_pairs": len(yours), "learner/stand_in_iterations": sum(
                round_judge(self.store, fb, j) != fb.learner for j in range(1, k + 1))})
        return model

    def ppo_reward(self):
        """What PPO maximises: the reward model's score, less `ppo_pessimism` × its members' spread."""
        k = self.config.ppo_pessimism
        return as_reward(pessimistic_reward(self.reward_model, k) if k else self.reward_model, self.tokenizer)

    def optimise(self, k: int) -> None:
        """`ppo_updates` PPO updates against the new reward model; the trainer checkpoint lands in iter_k/ppo."""
        self.trainer.reward = self.ppo_reward()
        self.trainer.update_offset_ = (k - 1) * self.config.ppo_updates  # the log counts updates per iteration
        self.trainer.provenance = {"iteration": k, "from_policy": policy_after(model_id(self.policy), k - 1),
                                   "reward_model": f"{self.iteration_dir(k).name}/reward_model"}
        self.trainer.train(self.train_prompts, n_updates=k * self.config.ppo_updates,
                           checkpoint_dir=self.iteration_dir(k) / "ppo")

    # ---- evaluation ----------------------------------------------------------------------------------------------
    def evaluate(self, k: int) -> dict:
        """Score the current policy on the eval prompts; append the row to evaluation.csv and return it. From
        iteration 1 on, the row holds `changes` against the previous iteration and the initial policy."""
        batch, kl = self._eval_replies(k)
        prompts, replies = batch.prompts, batch.responses
        gold = self.gold(prompts, replies)
        row = {"iteration": k, "update": self.trainer.update_, "gold_reward": float(np.mean(gold)), "kl": kl,
               "response_length": float(batch.response_lengths.float().mean()), "eos_rate": float(batch.eos.float().mean()),
               "distinct_1": distinct_n(replies, 1), "distinct_2": distinct_n(replies, 2),
               "judgments": self.store.counts()["total"]}
        if self.reward_model is not None:
            row["proxy_reward"] = float(self.reward_model.score(prompts, replies).mean())
            row.update(self.rm_report)
        taste = stand_in_taste(self.store, self.config.feedback, self.config.seed)
        if taste is not None:
            row["taste_reward"] = float(np.mean(taste.utility(prompts, replies)))
        origin = {"iteration": k, "model": policy_after(model_id(self.policy), k), "seed": batch.seed}
        write_atomic(self.iteration_dir(k) / "eval_samples.jsonl" if k else self._initial_eval_path(),
                     "".join(json.dumps({"prompt": p, "response": r, "gold": float(g), **origin}) + "\n"
                             for p, r, g in zip(prompts, replies, gold)))
        for name, j in (("previous", k - 1), ("initial", 0)):
            if k > 0:
                for what, result in self.changes(k, since=j).items():
                    key = {"gold": "gold", "taste": "taste", "reward model": "rm"}[what]
                    row.update({f"win_rate_{key}_vs_{name}": result.win_rate, f"{key}_gain_vs_{name}": result.gain,
                                f"{key}_gain_vs_{name}_ci_low": result.ci_low,
                                f"{key}_gain_vs_{name}_ci_high": result.ci_high,
                                ("" if key == "gold" else f"{key}_") + f"verdict_vs_{name}": result.verdict})
        table = self.evaluation()
        table = pd.concat([table[table["iteration"] < k], pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
        write_atomic(self.path / "evaluation.csv", table.to_csv(index=False))
        for tracker in self.trackers:
            tracker.log_scalars({k: v for k, v in row.items() if k not in ("iteration", "update")}, row["update"],
                                prefix="eval/")
        return row

    def _eval_replies(self, k: int):
        """(batch, mean KL) of the held-out replies at iteration k: `eval_samples` per eval prompt, and their KL to the
        initial policy (the trainer's reference), nats per reply: the full-distribution KL measured as they are sampled,
        in PPO's compute precision (`replies_with_kl`); with LoRA (the reference: adapters off), k1 afterwards."""
        seed, n = self.config.seed + 10_007, self.config.eval_samples
        reference = self.trainer.ref_policy
        if k == 0 or reference is None:
            batch = self._sample(self.eval_prompts, k, seed=seed, n_per_prompt=n)
            return batch, float(self.trainer.kl_to_reference(batch).mean()) if k else 0.0
        batch, kl = replies_with_kl(self.policy, reference, self.tokenizer, self.eval_prompts, self.config.ppo.sampling,
                                    in_sampler_precision=True, seed=seed, n_per_prompt=n, iteration=k)
        return batch, float(kl.mean())

    def _initial_eval_path(self) -> Path:
        self.iteration_dir(0).mkdir(parents=True, exist_ok=True)
        return self.iteration_dir(0) / "eval_samples.jsonl"

    def changes(self, k: int | None = None, since: int = 0) -> dict[str, PairedResult]:
        """Iteration k's eval replies (default: the last evaluated) against iteration `since`'s, on the same prompts,
        paired by prompt with 95 % intervals (`paired_gain`): "gold", "taste" (a stand-in's, once one judged) and
        "reward model": the run's latest one scores both (evaluation.csv's rm_ columns: each iteration's own then)."""
        k = int(self.evaluation()["iteration"].max()) if k is None else k
        before, after = (self._eval_samples(j) for j in (since, k))
        shape = (len(self.eval_prompts), self.config.eval_samples)

        def paired(utility) -> PairedResult:
            u0, u1 = (np.asarray(utility(p, r), dtype=float).reshape(shape) for p, r in (before, after))
            return paired_gain(u0, u1, seed=self.config.seed or 0)
        out = {"gold": paired(self.gold)}
        taste = stand_in_taste(self.store, self.config.feedback, self.config.seed)
        if taste is not None:
            out["taste"] = paired(taste.utility)
        if self.reward_model is not None:
            out["reward model"] = paired(lambda p, r: self.reward_model.score(p, r).numpy())
        return out

    def _eval_samples(self, k: int) -> tuple[list[str], list[str]]:
        """(prompts, replies) of iteration k's evaluation."""
        rows = eval_records(self.path, k)
        return [r["prompt"] for r in rows], [r["response"] for r in rows]

    def evaluation(self) -> pd.DataFrame:
        """evaluation.csv as a DataFrame (one row per evaluated iteration; 0 is the initial policy)."""
        path = self.path / "evaluation.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    def ppo_metrics(self) -> pd.DataFrame:
        """Every PPO update so far, with the iteration it belongs to."""
        df = self.trainer.history.to_frame()
        if len(df):
            df["iteration"] = (df["update"] - 1) // self.config.ppo_updates + 1
        return df
