"""End-to-end RLHF iterations on the tiny model: run directory, reopening, crash recovery, reproducibility."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf_lab.cli import demo_config, main
from rlhf_lab.loop.evaluation import distinct_n, verdict
from rlhf_lab.loop.experiment import ExperimentConfig, FeedbackConfig, RLHFRun
from rlhf_lab.train.ppo import PPOConfig
from rlhf_lab.train.trainer_checkpoint import saved_state

TIME_COLUMNS = ("time/",)


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df[[c for c in df.columns if not c.startswith(TIME_COLUMNS)]]


class Crash(RuntimeError):
    pass


class CrashAt:
    """A callback that kills the run (as a kernel crash would) after a given PPO update."""

    def __init__(self, update: int):
        self.update = update

    def on_step_end(self, trainer, metrics):
        if metrics["update"] == self.update:
            raise Crash(f"injected crash after update {self.update}")


@pytest.fixture(scope="module")
def two_iterations(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "a"
    config = demo_config(smoke=True)
    config.report_to = ("tensorboard",)
    config.ppo.log_samples_every = 1  # rollout samples logged at every update (no effect on the figures)
    run = RLHFRun.create(path, config, callbacks=[])
    run.run()
    return path, run


def test_two_iterations_leave_every_artefact(two_iterations):
    path, run = two_iterations
    assert json.loads((path / "config.json").read_text())["policy"] == "tiny"
    for k in (1, 2):
        d = path / f"iter_{k:03d}"
        assert (d / "DONE").is_file()
        assert (d / "reward_model").is_dir() and any((d / "reward_model").iterdir())
        assert (d / "ppo" / "model.safetensors").is_file()  # every iteration's policy
        assert (d / "ppo" / "optimizer.pt").is_file() == (k == 2)  # the state to resume from: the last one's only
        assert len((d / "eval_samples.jsonl").read_text().splitlines()) == 4
    evaluation = run.evaluation()
    assert evaluation["iteration"].tolist() == [0, 1, 2]
    assert evaluation["update"].tolist() == [0, 2, 4]
    assert evaluation.loc[1:, "rm/pairs"].tolist() == [16, 32]  # 8 items x 2 annotators, accumulating
    for column in ("gold_reward", "proxy_reward", "kl", "win_rate_gold_vs_initial", "win_rate_rm_vs_previous"):
        assert evaluation.loc[1:, column].notna().all(), column
    assert evaluation.loc[0, "kl"] == 0.0
    # the gain over the initial policy is paired by eval prompt, with its interval and verdict
    first = [json.loads(line)["gold"] for line in (path / "iter_000" / "eval_samples.jsonl").read_text().splitlines()]
    last = [json.loads(line)["gold"] for line in (path / "iter_002" / "eval_samples.jsonl").read_text().splitlines()]
    row = evaluation.iloc[2]
    assert row["gold_gain_vs_initial"] == pytest.approx(np.mean(last) - np.mean(first))
    assert row["gold_gain_vs_initial_ci_low"] <= row["gold_gain_vs_initial"] <= row["gold_gain_vs_initial_ci_high"]
    assert row["verdict_vs_initial"] == verdict(row["gold_gain_vs_initial_ci_low"], row["gold_gain_vs_initial_ci_high"])
    metrics = [json.loads(line) for line in (path / "ppo_metrics.jsonl").read_text().splitlines()]
    assert [(m["update"], m["iteration"]) for m in metrics] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    # PPO's rollout samples and checkpoints say which iteration, start policy and reward model they belong to
    samples = [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]
    assert sorted({(r["update"], r["iteration"], r["from_policy"], r["reward_model"]) for r in samples}) == [
        (1, 1, "tiny", "iter_001/reward_model"), (2, 1, "tiny", "iter_001/reward_model"),
        (3, 2, "tiny@iter_001", "iter_002/reward_model"), (4, 2, "tiny@iter_001", "iter_002/reward_model")]
    for k in (1, 2):
        state = saved_state(path / f"iter_{k:03d}" / "ppo")
        assert state["provenance"] == {"iteration": k, "from_policy": ["tiny", "tiny@iter_001"][k - 1],
                                       "reward_model": f"iter_{k:03d}/reward_model"}
    assert run.ppo_metrics()["iteration"].tolist() == [1, 1, 2, 2]
    counts = run.store.counts()
    assert counts["total"] == 32 and counts["by_iteration"] == {1: 16, 2: 16}
    assert evaluation["judgments"].tolist() == [0, 16, 32]
    # every artefact names the policy that wrote it: iteration k's pairs come from the policy after k − 1, its
    # evaluation from the policy after k (weights in iter_00k/ppo)
    sampled = run.store.judgments_df().groupby("iteration")["model"].unique().map(list).to_dict()
    assert sampled == {1: ["tiny"], 2: ["tiny@iter_001"]}
    for k, n in ((1, 16), (2, 32)):  # each reward model says what it was fitted on
        data = json.loads((path / f"iter_{k:03d}" / "reward_model_data.json").read_text())
        judged = run.store.judgments_df()
        assert data["pairs"] == n and data["iterations"] == list(range(1, k + 1))
        assert data["models"] == ["tiny", "tiny@iter_001"][:k]
        assert data["judgment_ids"] == sorted(judged.loc[judged["iteration"] <= k, "judgment_id"].tolist())
    for k, name in ((0, "tiny"), (1, "tiny@iter_001"), (2, "tiny@iter_002")):
        lines = [json.loads(line) for line in (path / f"iter_{k:03d}" / "eval_samples.jsonl").read_text().splitlines()]
        assert {(r["iteration"], r["model"], r["seed"]) for r in lines} == {(k, name, run.config.seed + 10_007)}


def test_report_to_tensorboard_logs_updates_and_evaluations(two_iterations):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, run = two_iterations
    events = EventAccumulator(str(path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("objective/kl")] == [1, 2, 3, 4]
    gold = [(e.step, round(e.value, 5)) for e in events.Scalars("eval/gold_reward")]
    assert gold == [(u, round(g, 5)) for u, g in zip(run.evaluation()["update"], run.evaluation()["gold_reward"])]


def test_reopening_continues_at_iteration_three(two_iterations, tmp_path):
    path, _ = two_iterations
    run = RLHFRun.open(path, callbacks=[])
    assert run.iteration == 2 and run.trainer.update_ == 4
    run.run(iterations=3)
    assert run.evaluation()["iteration"].tolist() == [0, 1, 2, 3]
    assert (path / "iter_003" / "DONE").is_file()
    assert [(path / f"iter_00{k}" / "ppo" / "optimizer.pt").is_file() for k in (1, 2, 3)] == [False, False, True]
    assert run.store.counts()["by_iteration"] == {1: 16, 2: 16, 3: 16}


def test_same_seed_same_metrics(two_iterations, tmp_path):
    path, first = two_iterations
    second = RLHFRun.create(tmp_path / "b", demo_config(smoke=True), callbacks=[])
    second.run()
    a = _comparable(pd.read_json(path / "ppo_metrics.jsonl", lines=True)).head(4)
    b = _comparable(second.ppo_metrics())
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(first.evaluation().head(3), second.evaluation())


def test_a_crash_mid_ppo_leaves_a_run_that_reopens_cleanly(tmp_path):
    path = tmp_path / "crash"
    run = RLHFRun.create(path, demo_config(smoke=True), callbacks=[CrashAt(update=3)])
    with pytest.raises(Crash):
        run.run()
    assert (path / "iter_001" / "DONE").is_file() and not (path / "iter_002" / "DONE").exists()
    assert (path / "iter_001" / "ppo" / "optimizer.pt").is_file()  # what the reopened run resumes from
    judged = run.store.counts()["total"]
    reopened = RLHFRun.open(path, callbacks=[])
    assert reopened.iteration == 1 and reopened.trainer.update_ == 2
    assert [json.loads(l)["update"] for l in (path / "ppo_metrics.jsonl").read_text().splitlines()] == [1, 2]
    reopened.run()
    assert reopened.evaluation()["iteration"].tolist() == [0, 1, 2]
    assert reopened.store.counts()["total"] == judged  # the interrupted iteration's judgments were reused


def test_a_crash_in_the_first_iteration_leaves_no_metrics_twice(tmp_path):
    path = tmp_path / "crash1"
    run = RLHFRun.create(path, demo_config(smoke=True, iterations=1), callbacks=[CrashAt(update=1)], log=None)
    with pytest.raises(Crash):
        run.run()
    run.store.close()
    assert [json.loads(l)["update"] for l in (path / "ppo_metrics.jsonl").read_text().splitlines()] == [1]
    for name in ("iter_001_backup", "iter_notes"):  # a learner's own folders: not iterations, never touched
        (path / name).mkdir()
        (path / name / "keep.txt").write_text("mine")
    reopened = RLHFRun.open(path, callbacks=[], log=None)
    assert reopened.iteration == 0 and reopened.completed_iterations() == 0
    reopened.run()
    assert [json.loads(l)["update"] for l in (path / "ppo_metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (path / "iter_001_backup" / "keep.txt").read_text() == (path / "iter_notes" / "keep.txt").read_text()
    reopened.store.close()


def test_create_refuses_to_overwrite_and_open_needs_a_run(two_iterations, tmp_path):
    path, _ = two_iterations
    with pytest.raises(FileExistsError, match="RLHFRun.open"):
        RLHFRun.create(path, demo_config(smoke=True))
    with pytest.raises(FileNotFoundError, match="RLHFRun.create"):
        RLHFRun.open(tmp_path / "nothing")


def test_overwrite_deletes_a_run_but_never_a_folder_with_other_files(tmp_path):
    folder = tmp_path / "mine"
    (folder / "data").mkdir(parents=True)
    (folder / "config.json").write_text('{"paper": "draft"}')
    (folder / "data" / "ratings_i_collected.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"mine is not an rlhf-lab run .*nothing was deleted"):
        RLHFRun.create(folder, demo_config(smoke=True), overwrite=True)
    run = tmp_path / "run"
    (run / "iter_001").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(demo_config(smoke=True).to_dict()))
    for name in ("feedback.db", "evaluation.csv", ".evaluation.csv.tmp-0123abcd", "thesis.tex"):
        (run / name).write_text("x")
    (run / "feedback.db-drafts").mkdir()  # the raters' unsubmitted answers for the run's store go with it
    (run / "feedback.db-drafts" / "alice-0123abcd.json").write_text("{}")
    with pytest.raises(ValueError, match=r"run holds files a run does not write \(thesis.tex\); nothing was deleted"):
        RLHFRun.create(run, demo_config(smoke=True), overwrite=True)
    assert (folder / "data" / "ratings_i_collected.csv").exists() and (run / "thesis.tex").exists()
    (run / "thesis.tex").unlink()
    fresh = RLHFRun.create(run, demo_config(smoke=True), overwrite=True, log=None)
    assert not (run / "iter_001").exists() and not (run / "evaluation.csv").exists()
    assert not (run / "feedback.db-drafts").exists()
    assert fresh.store.counts()["total"] == 0
    fresh.store.close()


def test_a_failed_create_leaves_nothing_behind_and_the_corrected_retry_needs_no_overwrite(tmp_path, monkeypatch):
    """A create refused for its prompt set, eval size or tracker writes nothing; one that fails later (here loading
    the policy) removes what it wrote and only that: the retry works without overwrite=True."""
    from dataclasses import replace

    import rlhf_lab.loop.experiment as experiment

    good = demo_config(smoke=True)
    path = tmp_path / "runs" / "demo"
    for bad, message in ((replace(good, prompt_set="curatd"), "Unknown prompt source 'curatd'"),
                         (replace(good, eval_prompts=100_000), "Asked for 100000 prompts"),
                         (replace(good, report_to=("wandb",)), r"Unknown report_to \['wandb'\]")):
        with pytest.raises(ValueError, match=message):
            RLHFRun.create(path, bad, log=None)
        assert list(tmp_path.iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    monkeypatch.setattr(experiment, "load_policy", lambda name: (_ for _ in ()).throw(OSError("no such model")))
    for folder in (path, mine):
        with pytest.raises(OSError, match="no such model"):
            RLHFRun.create(folder, good, log=None)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and [p.name for p in mine.iterdir()] == ["notes.txt"]
    monkeypatch.undo()
    run = RLHFRun.create(path, good, log=None)  # no overwrite=True needed
    assert ExperimentConfig.from_dict(json.loads((path / "config.json").read_text())) == good
    assert run.store.counts()["total"] == 0
    run.store.close()


def test_config_round_trips_and_refuses_bad_values():
    config = demo_config(smoke=True)
    again = ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="strategy"):
        FeedbackConfig(strategy="best")
    with pytest.raises(ValueError, match=r"Unknown ExperimentConfig fields \['polciy'\]"):
        ExperimentConfig.from_dict({"polciy": "tiny"})
    with pytest.raises(ValueError, match=r"Unknown PPOConfig fields \['lr'\]"):  # nested configs: the same rule
        ExperimentConfig.from_dict({"ppo": {"lr": 1e-5}})
    with pytest.raises(ValueError, match="eval_prompts must be at least 2 .a gain paired by prompt"):  # not at the end
        ExperimentConfig(eval_prompts=1)


def test_the_experiment_seed_seeds_every_stage():
    config = demo_config(smoke=True, seed=3)
    assert config.seeded(config.ppo).seed == 3 and config.seeded(config.reward).seed == 3
    explicit = ExperimentConfig(seed=3, ppo=PPOConfig(seed=7))
    assert explicit.seeded(explicit.ppo).seed == 7 and explicit.seeded(explicit.reward).seed == 3
    again = ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.ppo.seed is None  # a stage that follows the experiment's seed keeps following it when reloaded


def test_two_experiment_seeds_differ_in_the_reward_model_and_ppo_batches(two_iterations, tmp_path):
    """ExperimentConfig(seed=...) once seeded only sampling and the crowd: PPO and the reward model kept seed 0."""
    path, first = two_iterations
    other = RLHFRun.create(tmp_path / "seed1", demo_config(smoke=True, iterations=1, seed=1), callbacks=[])
    other.run()
    members = lambda run: run.reward_model.weights_.clone()  # noqa: E731  (the embedding model's bootstrap members)
    reopened = RLHFRun.open(path, callbacks=[])  # seed 0, its last reward model
    first_rm = type(reopened.reward_model).load(path / "iter_001" / "reward_model")
    assert other.trainer.seed == 1 and first.trainer.seed == 0
    assert (first_rm.config.seed, other.reward_model.config.seed) == (0 + 1, 1 + 1)  # seed + iteration: new members
    assert first_rm.weights_.shape == members(other).shape and not torch.equal(first_rm.weights_, members(other))
    assert other.trainer.prompt_batch(other.train_prompts, 1) != first.trainer.prompt_batch(first.train_prompts, 1)
    a = _comparable(pd.read_json(path / "ppo_metrics.jsonl", lines=True)).head(2)
    b = _comparable(other.ppo_metrics().drop(columns="iteration"))
    assert not a["objective/scores"].equals(b["objective/scores"])


def test_distinct_n_counts_repeated_ngrams():
    assert distinct_n(["a b c", "a b d"], 1) == 4 / 6
    assert distinct_n(["a b a b"], 2) == 2 / 3
    assert distinct_n([""], 2) == 0.0


def test_demo_smoke_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Loading weights" not in captured.err + printed  # transformers' bar would break the stage lines
    assert f"report: {out / 'report' / 'summary.md'}" in printed
    lines = printed.splitlines()  # the console says what happens, stage by stage, before each stage
    assert "RANDOM model" in lines[0] and lines[1].startswith(f"starting {out}: loading tiny")
    assert "iteration 1/2: sampling 8 pairs of replies from the policy" in lines
    assert "iteration 2/2: 2 PPO updates against it" in lines
    updates = [line.split(" | ")[0] for line in lines if line.startswith("update ")]
    assert updates == ["update 1/2", "update 2/2", "update 1/2 (3/4 in the run)", "update 2/2 (4/4 in the run)"]
    assert "(smoke run: a random model)" in lines[-2]
    report = out / "report"
    for name in ("ppo_curves.png", "over_optimisation.png", "rm_accuracy.png", "evaluation.csv", "ppo_metrics.csv"):
        assert (report / name).stat().st_size > 0, name
    summary = (report / "summary.md").read_text()
    assert "## The same eval prompts across iterations" in summary and "iteration 2" in summary
    assert "**A smoke run**" in summary and "gold gain vs start" in summary and "rm/val_accuracy" not in summary
    assert "| nan |" not in summary and "| 0 | 0 | 0.375 | – |" in summary  # iteration 0 has no reward model yet
    assert "KL to the reference" in summary and "(β fixed at 0.05)." in summary  # the smoke run's PPO has no target
    free = subprocess.run([sys.executable, "-c", f"from rlhf_lab.core.locks import FolderLock; "
                           f"print(FolderLock({str(out)!r}, 'the run').held)"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])), timeout=120)
    assert free.stdout.strip() == "True", "the command gave the run's folder back: a notebook may open it now"
    assert main(["demo", "--smoke", "--out", str(out)]) == 2  # a second run never deletes the first silently
    assert "--resume" in capsys.readouterr().err and (out / "feedback.db").is_file()
    # --resume goes on with the run's own settings: flags that say otherwise are refused, not ignored
    assert main(["demo", "--smoke", "--out", str(out), "--resume", "--seed", "5"]) == 2
    assert capsys.readouterr().err.strip() == (f"rlhf-lab demo: error: {out} holds a run made otherwise (it has seed "
                                                "0, not 5): --resume continues it with its own settings, so match "
                                                "them, or give another --out.")
    assert main(["demo", "--out", str(out), "--resume"]) == 2
    assert "(it is a --smoke run)" in capsys.readouterr().err
    assert main(["demo", "--smoke", "--out", str(out), "--resume", "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err
    (out / "thesis.tex").write_text("mine")
    assert main(["demo", "--smoke", "--out", str(out), "--overwrite"]) == 2  # never deletes what a run did not write
    assert "holds files a run does not write (thesis.tex)" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "mine" and (out / "feedback.db").is_file()


def test_the_summary_says_how_an_adaptive_beta_moved():
    from rlhf_lab.loop.report import kl_sentence

    metrics = pd.DataFrame({"update": [2, 1, 3], "objective/beta": [0.098, 0.1, 0.09604]})
    last = {"kl": 7.836}
    assert kl_sentence(last, PPOConfig(batch_size=8, kl_target=6.0), metrics) == (
        " KL to the reference 7.84 nats per reply; β adapted towards a KL of 6 per reply, by at most 2 % an update: "
        "0.1 in the first update, 0.096 in the last.")
    assert "by at most 0.016 % an update" in kl_sentence(last, PPOConfig(kl_target=6.0, kl_horizon=10_000), metrics)
    assert kl_sentence(last, PPOConfig(kl_coef=0.1), metrics.assign(**{"objective/beta": 0.1})).endswith(
        "(β fixed at 0.1).")
    assert kl_sentence(last, PPOConfig(), metrics.head(0)) == " KL to the reference 7.84 nats per reply."


def test_a_full_disk_stops_the_demo_with_one_line_and_keeps_what_was_done(tmp_path, capsys, monkeypatch):
    """Too little room for the run's checkpoints: refused before any work; room for the first checks but not for
    the checkpoint (the disk filled meanwhile): stopped there, iteration 0 kept; with room again, --resume goes on."""
    import collections
    import shutil

    import rlhf_lab.core.checkpoint as checkpoint

    out, real = tmp_path / "demo", shutil.disk_usage
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 1000, 1000))  # 1 kB free
    assert main(["demo", "--smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlhf-lab demo: error: Not enough disk space for 2 more iterations of the run in") \
        and "\n" not in err and "what was saved before is intact" in err
    assert not (out / "iter_000").exists()  # nothing done: refused before iteration 0's evaluation
    monkeypatch.setattr(shutil, "disk_usage", real)
    monkeypatch.setattr(checkpoint, "ensure_free_space", lambda folder, needed, what: (_ for _ in ()).throw(
        OSError(28, f"Not enough disk space for {what}: a test's full disk")))  # the disk filled during the run
    assert main(["demo", "--smoke", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlhf-lab demo: error: Not enough disk space for the checkpoint {out / 'iter_001' / 'ppo'}: " \
        "a test's full disk"
    assert not (out / "iter_001" / "DONE").exists() and not (out / "iter_001" / "ppo").exists()
    assert (out / "iter_000" / "eval_samples.jsonl").is_file() and RLHFRun.open(out, callbacks=[]).store.counts()["total"]
    monkeypatch.undo()
    assert main(["demo", "--smoke", "--out", str(out), "--resume"]) == 0  # space freed: it goes on
    assert (out / "iter_002" / "DONE").is_file()


def test_a_config_json_that_is_not_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"policy": "tiny", ')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        RLHFRun.open(tmp_path)


def test_a_learners_run_learns_their_judgments_and_a_stand_in_says_so(tmp_path, capsys):
    """FeedbackConfig(learner="me"): iteration 1 learns the learner's 3 judgments (the crowd, weighted 0, never
    judges); nobody rates iteration 2, so the stand-in with the taste "short" judges it, said aloud; each evaluation
    holds the gold, taste and reward-model changes, paired by prompt; reopened, the embedding model comes back."""
    from dataclasses import replace

    from rlhf_lab.feedback.tastes import short_replies
    from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

    config = replace(demo_config(smoke=True), reward_kind="embedding", eval_samples=2,
                     embedding=EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=1),
                     feedback=FeedbackConfig(pairs_per_iteration=6, annotators=2, learner="me", stand_in="short",
                                             learner_minimum=3, strategy="temperatures"))
    run = RLHFRun.create(tmp_path / "learner", config, callbacks=[])
    run.evaluate(0)
    for item in run.propose_items(1)[:3]:
        run.store.record_pairwise(item.id, "me", "A")
    first = run.run_iteration()
    said = capsys.readouterr().out
    assert "using your 3 judgment(s) as 'me' of this iteration's 6 pairs" in said and "SIMULATED" not in said
    assert set(run.store.counts()["by_annotator"]) == {"me"}  # crowd_weight 0: the crowd does not judge
    assert (first["rm/pairs"], first["rm/learner_pairs"], first["learner/stand_in_iterations"]) == (3, 3, 0)
    assert "taste_reward" not in first and set(run.changes(1)) == {"gold", "reward model"}

    second = run.run_iteration()
    assert "⚠ Nobody rated as 'me': a SIMULATED learner ('me (simulated)', taste 'short')" in capsys.readouterr().out
    assert (second["rm/pairs"], second["learner/stand_in_iterations"]) == (9, 1)
    assert 0 <= second["rm/val_accuracy"] <= 1  # cross-validated by prompt on the learner's 9 pairs
    samples = [[json.loads(line) for line in (run.path / f"iter_00{k}" / "eval_samples.jsonl").read_text().splitlines()]
               for k in (0, 2)]
    taste = [np.mean([short_replies(s["prompt"], s["response"]) for s in rows]) for rows in samples]
    assert second["taste_reward"] == pytest.approx(taste[1])
    assert second["taste_gain_vs_initial"] == pytest.approx(taste[1] - taste[0])
    changes = run.changes(2, since=0)
    assert set(changes) == {"gold", "taste", "reward model"}
    assert second["rm_gain_vs_initial"] == pytest.approx(changes["reward model"].gain)
    assert second["rm_verdict_vs_initial"] == changes["reward model"].verdict == verdict(
        second["rm_gain_vs_initial_ci_low"], second["rm_gain_vs_initial_ci_high"])
    assert second["taste_verdict_vs_previous"] == run.changes(2, since=1)["taste"].verdict

    reopened = RLHFRun.open(run.path, callbacks=[])
    assert isinstance(reopened.reward_model, EmbeddingRewardModel) and reopened.iteration == 2
    replies = ["Yes.", "Well, that is a long story and I will tell you all of it."]
    assert torch.equal(reopened.reward_model.score(["Hi?"] * 2, replies), run.reward_model.score(["Hi?"] * 2, replies))


def test_disagreement_asks_about_the_pair_an_embedding_ensemble_disputes_most(tmp_path):
    """feedback.strategy="disagreement" with the embedding reward model (the demo's): of each prompt's candidates,
    the two whose reward difference the members' scores spread most over, as computed here from the members."""
    from dataclasses import replace

    from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel

    config = replace(demo_config(smoke=True), feedback=FeedbackConfig(strategy="disagreement", candidates=4))
    run = RLHFRun.create(tmp_path / "run", config, callbacks=[])
    good = ["Sure, happy to help!", "Of course, here it is.", "Glad you asked, thanks!", "Yes, gladly."]
    bad = ["no", "go away", "whatever I guess", "I do not care about that at all, really not."]
    run.reward_model = EmbeddingRewardModel(EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=4,
                                                                  words_min_replies=1, seed=0)).fit(
        pd.DataFrame({"prompt": ["Can you help?"] * 4, "chosen": good, "rejected": bad}))
    replies = good + bad + ["Hello there!", "Maybe.", "It is what it is.", "Thanks!!", "Sure.", "no way",
                            "A long reply that rambles on and on without saying much at all.", "ok"]
    records = [{"prompt": f"prompt {i // 4}", "response": r} for i, r in enumerate(replies)]
    from rlhf_lab.loop.disagreement import most_disputed

    chosen = most_disputed(records, 4, np.random.default_rng(0), run.reward_model)
    assert len(chosen) == 8
    for g in range(4):
        group = records[4 * g:4 * g + 4]
        members = run.reward_model.member_scores_raw([r["prompt"] for r in group], [r["response"] for r in group])
        spread = (members[:, :, None] - members[:, None, :]).std(dim=0)  # (4, 4): symmetric, zero diagonal
        assert float(spread.max()) > 0
        i, j = divmod(int(spread.argmax()), 4)
        assert {chosen[2 * g]["response"], chosen[2 * g + 1]["response"]} == {group[i]["response"],
                                                                               group[j]["response"]}


def test_ppo_pessimism_is_checked_and_pays_ppo_the_score_less_the_members_spread(tmp_path):
    import types
    from dataclasses import replace

    from rlhf_lab.reward.embedding import EmbeddingRewardConfig, EmbeddingRewardModel
    from rlhf_lab.reward.sources import ModelReward

    with pytest.raises(ValueError, match="set reward.ensemble_size to 2 or more"):
        ExperimentConfig(ppo_pessimism=1.0)  # one network: no spread to weigh
    with pytest.raises(ValueError, match="set embedding.ensemble_size to 2 or more"):
        ExperimentConfig(reward_kind="embedding", ppo_pessimism=1.0, embedding=EmbeddingRewardConfig(ensemble_size=1))
    with pytest.raises(ValueError, match="ppo_pessimism must be a number >= 0"):
        ExperimentConfig(reward_kind="embedding", ppo_pessimism=-1.0)
    config = replace(demo_config(smoke=True), reward_kind="embedding", ppo_pessimism=2.0,
                     embedding=EmbeddingRewardConfig(features=("surface", "words"), ensemble_size=3))
    run = RLHFRun.create(tmp_path / "pessimist", config, callbacks=[])
    replies = ["Sure! Here is a long and friendly answer for you.", "No.", "Maybe, it depends on the day.", "Yes"]
    pairs = pd.DataFrame({"prompt": ["hi", "why", "how", "what"], "chosen": replies[:2] + replies[2:],
                          "rejected": replies[1:] + replies[:1]})
    run.reward_model = EmbeddingRewardModel(config.embedding).fit(pairs)
    prompts = ["hi", "why", "how", "what"]
    members = run.reward_model.member_scores(prompts, replies)  # (3, 4)
    assert float(members.std(0).max()) > 1e-3  # the bootstrap members disagree somewhere
    batch = types.SimpleNamespace(prompts=prompts, responses=replies)  # what PPO reads of a GenerationBatch's
    torch.testing.assert_close(run.ppo_reward()(batch), members.mean(0) - 2.0 * members.std(0, correction=0))
    run.config = replace(config, ppo_pessimism=0.0)  # 0: the score itself, as the trainer reads a reward model
    assert isinstance(run.ppo_reward(), ModelReward) and run.ppo_reward().model is run.reward_model
