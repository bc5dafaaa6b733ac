"""`rlhf-lab export`: a run's judgments and hyper-parameters for trainers past one GPU (TRL, OpenRLHF, verl).

    rlhf-lab export --run runs/demo --to trl --out exports/demo-trl          # the run's feedback.db and config.json
    rlhf-lab export --store class.db --annotator s001 --to openrlhf --out exports/s001
    rlhf-lab export --run runs/taste-short-seed0 --to verl --out exports/verl --iteration 0

Writes into --out (files already there are refused unless --force; all are written before any replaces an old one):

    trl       preference.jsonl, unpaired.jsonl (KTO), dpo.yaml, reward.yaml, kto.yaml  (`trl dpo --config dpo.yaml`)
    openrlhf  preference.jsonl, unpaired.jsonl, prompts.jsonl, openrlhf.sh  (`bash openrlhf.sh rm|dpo|kto|ppo`)
    verl      rl.parquet (rl.json, JSON lines, without pyarrow), verl.yaml, verl.sh  (PPO with a reward model)
    all       export.json: what was written, from where, and the settings' sources

The rows are `feedback.trainer_formats`'; the recipes `loop.recipes`'. Hyper-parameters come from --run's
config.json (a demo run's `ExperimentConfig` or a taste run's `TasteConfig`) or state.json (a PPO, DPO or KTO
trainer checkpoint's config, `examples/train_*.py`'s --out/checkpoint too); what the run does not hold, or
everything without --run, comes from the lab's defaults: the DPO, PPO, policy and sampling of `TasteConfig()`
(what `rlhf-lab taste` runs), `RewardConfig()` and `KTOConfig()`.
The conversational format is chosen when the policy reads a chat template (`--chat auto`: the run's
`chat_template` setting, else the lab's aliases, which all have one, else a local model's tokenizer files).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlhf_lab.core.files import read_json, write_atomic_all
from rlhf_lab.feedback import trainer_formats as tf
from rlhf_lab.loop.recipes import PROMPT_TOKENS, RecipeData, openrlhf_script, trl_recipes, verl_recipe

__all__ = ["TARGETS", "DEFAULT", "ExportSettings", "export_settings", "export", "add_export_command"]

TARGETS = ("trl", "openrlhf", "verl")
DEFAULT = "default: "
"""How `ExportSettings.sources` marks a section taken from the lab's defaults."""


@dataclass
class ExportSettings:
    """The lab's configs a recipe reads, and where each came from (`sources`: section -> file or default)."""

    policy: str
    model: str
    """The policy as other tools load it: a hub id or a directory."""
    reward_model: str
    sampling: object
    dpo: object
    ppo: object
    reward: object
    kto: object
    ppo_updates: int
    run_name: str = "rlhf-lab"
    chat: bool = False
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def sources_lines(self) -> list[str]:
        """The sources as comment lines: the run's files with their sections, then the defaults used."""
        files: dict[str, list[str]] = {}
        for section, where in self.sources.items():
            if not where.startswith(DEFAULT):
                files.setdefault(where, []).append(section)
        defaults = [f"{section} = {where.removeprefix(DEFAULT)}" for section, where in self.sources.items()
                    if where.startswith(DEFAULT)]
        return [f"from {where}: {', '.join(sections)}" for where, sections in files.items()] + \
            ([f"lab defaults: {', '.join(defaults)}"] if defaults else [])

    def kl_target_per_token(self) -> float | None:
        target = self.ppo.kl_target
        return None if target is None else target / self.ppo.sampling.max_new_tokens

    def prompt_tokens(self) -> int:
        return self.ppo.sampling.max_prompt_tokens or PROMPT_TOKENS

    def desirable_weight(self, data: RecipeData) -> float:
        """KTO's λ_D: the config's, or (None) n_undesirable / n_desirable of the exported thumbs."""
        if self.kto.desirable_weight is not None:
            return self.kto.desirable_weight
        return round((data.thumbs - data.desirable) / data.desirable, 6) if data.desirable else 1.0


def _seeded(stage, seed: int):
    return stage if stage.seed is not None else replace(stage, seed=seed)


def _hub_name(name: str, notes: list) -> str:
    from rlhf_lab.policy.models import OFFLINE_MODELS, SMOLLM2, TINY

    if name in OFFLINE_MODELS:
        return OFFLINE_MODELS[name].hub_id
    if name == TINY:
        notes.append(f"the run's policy is 'tiny' (a random model for smoke runs, not on the Hub): the recipes name "
                     f"{SMOLLM2.hub_id}, whose tokenizer it uses")
        return SMOLLM2.hub_id
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def _chat(settings: ExportSettings, choice: str) -> bool:
    from rlhf_lab.policy.models import KNOWN_ALIASES

    if choice != "auto":
        return choice == "yes"
    if settings.sampling.chat_template is not None:
        return bool(settings.sampling.chat_template)
    if settings.policy in KNOWN_ALIASES:
        return True
    folder = Path(settings.policy)
    config = folder / "tokenizer_config.json"
    if (folder / "chat_template.jinja").is_file() or (config.is_file() and "chat_template" in read_json(config)):
        return True
    settings.notes.append(f"could not tell whether {settings.policy} has a chat template: wrote the standard format "
                          "(--chat yes writes the conversational one)")
    return False


EMBEDDING_NOTE = ("the run's reward model was the lab's embedding one (a Bradley–Terry head on frozen MiniLM "
                  "embeddings), which the trainers do not train: the reward recipes hold RewardConfig()'s defaults")


def export_settings(run: str | Path | None = None, chat: str = "auto") -> ExportSettings:
    """The configs of `run` (a folder with config.json or state.json; None: the lab's defaults), see the module
    docstring."""
    from rlhf_lab.loop.taste import TasteConfig
    from rlhf_lab.reward.model import RewardConfig
    from rlhf_lab.reward.network import MINILM
    from rlhf_lab.train.kto import KTOConfig
    from rlhf_lab.train.ppo import PPOConfig

    base = TasteConfig()
    parts = dict(policy=base.policy, sampling=base.sampling, dpo=base.dpo, ppo=base.ppo, reward=RewardConfig(),
                 kto=KTOConfig(), ppo_updates=base.ppo_updates)
    sources = {"policy": f"{DEFAULT}TasteConfig().policy", "dpo": f"{DEFAULT}TasteConfig().dpo",
               "ppo": f"{DEFAULT}TasteConfig().ppo (lesson 4's)", "reward": f"{DEFAULT}RewardConfig()",
               "kto": f"{DEFAULT}KTOConfig()"}
    run_name, seed = "rlhf-lab", base.seed  # a stage's seed of None follows the run's (as in the lab)
    notes: list[str] = []
    if run is not None:
        run, run_name = Path(run), Path(run).resolve().name
        if (run / "config.json").is_file():
            where, values = str(run / "config.json"), read_json(run / "config.json")
            if isinstance(values, dict) and "dpo" in values:
                c = TasteConfig.from_dict(values)
                parts.update(policy=c.policy, sampling=c.sampling, dpo=c.dpo, ppo=c.ppo, ppo_updates=c.ppo_updates)
                sources.update(policy=where, dpo=where, ppo=where)
                seed = c.seed
                notes.append(EMBEDDING_NOTE)
            elif isinstance(values, dict) and "feedback" in values:
                from rlhf_lab.loop.experiment import ExperimentConfig

                c = ExperimentConfig.from_dict(values)
                parts.update(policy=c.policy, sampling=c.ppo.sampling, ppo=c.ppo,
                             ppo_updates=c.ppo_updates * c.iterations)
                sources.update(policy=where, ppo=where)
                if c.reward_kind == "network":
                    parts["reward"], sources["reward"] = c.reward, where
                else:
                    notes.append(EMBEDDING_NOTE)
                seed = c.seed
            else:
                raise ValueError(f"{where} is neither a demo run's config nor a taste run's (no 'feedback' or 'dpo' "
                                 "section): give --run a folder that `rlhf-lab demo` or `rlhf-lab taste` wrote")
        elif (run / "state.json").is_file():  # a trainer checkpoint: PPO's, DPO's or KTO's (train_dpo.py's too)
            from rlhf_lab.train.dpo import DPOConfig

            where, state = str(run / "state.json"), read_json(run / "state.json")
            config = state.get("config") if isinstance(state, dict) else None
            kinds = {"ppo": ("vf_coef", PPOConfig), "dpo": ("loss_type", DPOConfig),
                     "kto": ("desirable_weight", KTOConfig)}
            kind = next((k for k, (field, _) in kinds.items() if isinstance(config, dict) and field in config), None)
            if kind is None:
                raise ValueError(f"{where} holds no PPO, DPO or KTO trainer config: give --run a trainer checkpoint, "
                                 "or a run folder with config.json")
            stage = kinds[kind][1].from_dict(config)
            parts.update({kind: stage, "sampling": stage.sampling} if kind == "ppo" else {kind: stage})
            sources[kind] = where
            if state.get("model_id", "unknown") != "unknown":
                parts["policy"], sources["policy"] = state["model_id"], where
        elif (run / "checkpoint" / "state.json").is_file():  # examples/train_*.py's --out
            raise FileNotFoundError(f"--run {run} is a training script's folder: give --run {run / 'checkpoint'}, "
                                    "its trainer checkpoint")
        else:
            raise FileNotFoundError(f"--run {run} holds no run (no config.json or state.json): give a folder that "
                                    "`rlhf-lab demo` or `rlhf-lab taste` wrote, or a trainer checkpoint")
    parts.update({k: _seeded(parts[k], seed) for k in ("dpo", "ppo", "reward", "kto")})
    model = _hub_name(parts["policy"], notes)
    backbone = parts["reward"].backbone
    reward_model = model if backbone == MINILM else _hub_name(backbone, notes)
    if backbone == MINILM:
        notes.append(f"the reward recipes name the policy ({model}) where the lab's reward model used MiniLM, a "
                     "sentence encoder without a chat template")
    settings = ExportSettings(model=model, reward_model=reward_model, run_name=run_name, sources=sources,
                              notes=notes, **parts)
    settings.chat = _chat(settings, chat)
    return settings


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _parquet(rows: list[dict]) -> bytes:
    import io

    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer, index=False)
    return buffer.getvalue()


def export(store, target: str, out: str | Path, settings: ExportSettings, annotator: str = tf.EVERYONE,
           iteration: int | None = None, force: bool = False, store_name: str = "") -> dict:
    """Write `target`'s files for the store's judgments into `out` (see the module docstring); returns what
    export.json holds."""
    if target not in TARGETS:
        raise ValueError(f"--to {target!r}: use one of {', '.join(TARGETS)}")
    rows = tf.trainer_rows(store, annotator, iteration, system_prompt=settings.sampling.system_prompt)
    if not rows.pairs and not rows.unpaired:
        raise ValueError("nothing to export: no preference pairs (ties are left out) and no thumbs "
                         f"{'' if annotator == tf.EVERYONE else f'by {annotator} '}"
                         f"{'' if iteration is None else f'in iteration {iteration} '}in this store")
    chat, files, notes = settings.chat, {}, list(settings.notes)
    if target in ("trl", "openrlhf") and rows.pairs:
        files["preference.jsonl"] = tf.trl_preference(rows, chat)
    if target in ("trl", "openrlhf") and rows.unpaired:
        files["unpaired.jsonl"] = (tf.trl_unpaired if target == "trl" else tf.openrlhf_unpaired)(rows, chat)
    if target == "openrlhf":
        files["prompts.jsonl"] = tf.openrlhf_prompts(rows, chat)
    prompts_file = "prompts.jsonl"
    if target == "verl":
        prompts_file = "rl.parquet" if importlib.util.find_spec("pyarrow") else "rl.json"
        if prompts_file == "rl.json":
            notes.append("pyarrow is not installed: rl.json holds the prompts as JSON lines, which verl reads too "
                         "(pip install pyarrow and export again for rl.parquet)")
        files[prompts_file] = tf.verl_prompts(rows)
    data = RecipeData(preference=files.get("preference.jsonl") and "preference.jsonl",
                      unpaired=files.get("unpaired.jsonl") and "unpaired.jsonl", prompts=prompts_file,
                      pairs=len(rows.pairs), thumbs=len(rows.unpaired), n_prompts=len(rows.prompts), chat=chat,
                      margins=any(p["margin"] is not None for p in rows.pairs),
                      desirable=sum(e["label"] for e in rows.unpaired))
    if target in ("openrlhf", "verl") and data.n_prompts < settings.ppo.batch_size:
        notes.append(f"{data.n_prompts} prompts are fewer than one PPO batch ({settings.ppo.batch_size}): OpenRLHF "
                     "and verl drop an incomplete batch, so judge more prompts or lower the batch size")
    settings = replace(settings, notes=notes)
    texts = (trl_recipes(settings, data) if target == "trl" else
             {"openrlhf.sh": openrlhf_script(settings, data)} if target == "openrlhf" else
             dict(zip(("verl.yaml", "verl.sh"), verl_recipe(settings, data))))
    summary = {"target": target, "store": store_name, "annotator": annotator, "iteration": iteration,
               "format": "conversational" if chat else "standard", "policy": settings.model,
               "files": {name: len(r) for name, r in files.items()} | {name: None for name in texts},
               "ties_left_out": rows.ties_left_out, "settings": settings.sources, "notes": notes}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder (it is created if missing)")
    names = [*files, *texts, "export.json"]
    there = [n for n in names if (out / n).exists()]
    if there and not force:
        raise FileExistsError(f"{out} already holds {', '.join(there)}: pass --force to replace them, or give "
                              "another --out")
    contents = {out / name: _parquet(file_rows) if name.endswith(".parquet") else _jsonl(file_rows)
                for name, file_rows in files.items()}
    contents.update({out / name: text for name, text in texts.items()})
    contents[out / "export.json"] = json.dumps(summary, indent=1, ensure_ascii=False) + "\n"  # last: the set is whole
    write_atomic_all(contents)  # all written before any replaces an old one: a full disk leaves the old export
    for name in texts:
        if name.endswith(".sh"):
            os.chmod(out / name, 0o755)
    return summary


def cmd_export(args) -> None:
    from rlhf_lab.feedback.store import FeedbackStore

    if args.run is not None and not Path(args.run).is_dir():
        raise FileNotFoundError(f"--run {args.run}: no such folder; give a run folder (`rlhf-lab demo` or `rlhf-lab "
                                "taste` writes one), or leave --run out for the lab's defaults")
    store_path = args.store or (str(Path(args.run) / "feedback.db") if args.run else None)
    if store_path is None:
        raise ValueError("give --store (a store's path or URL), or --run with a run folder that holds feedback.db")
    if "://" not in store_path and not Path(store_path).is_file():
        raise FileNotFoundError(f"no store at {store_path}: give --store the path of a feedback store (or its URL)")
    settings = export_settings(args.run, args.chat)
    with FeedbackStore(store_path) as store:
        summary = export(store, args.to, args.out, settings, annotator=args.annotator, iteration=args.iteration,
                         force=args.force, store_name=store.display_url)
    for name, n in summary["files"].items():
        print(f"wrote {Path(args.out) / name}" + ("" if n is None else f" ({n} rows)"))
    for note in summary["notes"]:
        print(f"note: {note}")


def add_export_command(subparsers) -> argparse.ArgumentParser:
    """Add `export` to the `rlhf-lab` subparsers; returns its parser."""
    export_parser = subparsers.add_parser(
        "export", help="write a run's judgments and settings for TRL, OpenRLHF or verl (Ray-based trainers)")
    export_parser.add_argument("--to", required=True, choices=TARGETS, help="the trainer whose formats to write")
    export_parser.add_argument("--out", required=True, help="folder for the files (created if missing)")
    export_parser.add_argument("--run", default=None,
                               help="a run folder (config.json and feedback.db) or a trainer checkpoint (state.json): "
                                    "the hyper-parameters; default: the lab's defaults")
    export_parser.add_argument("--store", default=None, help="store path or URL (default: the run's feedback.db)")
    export_parser.add_argument("--annotator", default=tf.EVERYONE, help="whose judgments (default '*': everyone's)")
    export_parser.add_argument("--iteration", type=int, default=None, help="only this iteration's judgments")
    export_parser.add_argument("--chat", choices=("auto", "yes", "no"), default="auto",
                               help="conversational rows (chat messages) or standard (strings); auto: as the policy")
    export_parser.add_argument("--force", action="store_true", help="replace files already in --out")
    export_parser.set_defaults(func=cmd_export)
    return export_parser
