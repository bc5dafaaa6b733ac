"""Recipes that name a run's hyper-parameters in another trainer's words: TRL, OpenRLHF and verl.

    trl_recipes(settings, data)       # {"dpo.yaml": ..., "reward.yaml": ..., "kto.yaml": ...}  for `trl dpo --config`
    openrlhf_script(settings, data)   # a bash script: `bash openrlhf.sh rm|dpo|kto|ppo`
    verl_recipe(settings, data)       # (verl.yaml, verl.sh): the same `python3 -m verl.trainer.main_ppo` keys

`settings` is an `export.ExportSettings` (the lab's configs of the run); `data` is a `RecipeData` (which files were
written, how many rows). Every file starts with comments saying where each setting came from. How the lab's
settings map:

- batches: the lab's `batch_size` counts pairs / examples / prompts per optimiser step (PPO: per rollout),
  `micro_batch_size` per forward pass. TRL: per_device_train_batch_size = micro, gradient_accumulation_steps =
  batch / micro (one GPU; divide the accumulation by the GPU count). OpenRLHF: train_batch_size is global,
  micro_train_batch_size per GPU. verl: data.train_batch_size prompts per rollout, ppo_mini_batch_size per step.
- the policy trainers' optimiser: AdamW, ε 1e-5, no weight decay, constant learning rate, no warm-up.
- KL: the lab's PPO target is nats per reply; OpenRLHF and verl measure the KL per token (mean over the reply),
  so their target is the lab's divided by max_new_tokens (higher in truth when replies stop early).
- the reward model: a causal-LM backbone is named as it is; the MiniLM encoder (no chat template, and OpenRLHF's
  and verl's reward models read a causal LM's last token) is replaced by the policy, with the same settings.
- ties are not exported, so the lab's tie targets (½) have no counterpart.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

import yaml

__all__ = ["RecipeData", "trl_recipes", "openrlhf_script", "verl_recipe", "TRL_VERSION", "OPENRLHF_VERSION",
           "VERL_VERSION", "PROMPT_TOKENS", "REWARD_MODEL_ENV", "rl_epochs"]

TRL_VERSION = "TRL 1.x; names checked against trl 1.16's DPOConfig, RewardConfig, KTOConfig and ModelConfig"
OPENRLHF_VERSION = "OpenRLHF 0.9-0.10 flags, checked against 0.9.5 (the last with train_kto; 0.11 renamed them, " \
                   "e.g. --data.prompt_key)"
VERL_VERSION = "verl 0.6-0.7 keys, checked against verl 0.7's ppo_trainer.yaml"
PROMPT_TOKENS = 256
"""Prompt token budget for OpenRLHF and verl when the run set no `max_prompt_tokens` (the lab then keeps whole
prompts; its prompt sets hold prompts of at most 24 words, well within this with a chat template)."""
REWARD_MODEL_ENV = "REWARD_MODEL"
"""The environment variable verl's recipe reads the reward model's path from (e.g. what `openrlhf.sh rm` wrote)."""


@dataclass
class RecipeData:
    """What the recipes point at: file names (None when not written), row counts, the format."""

    preference: str | None
    unpaired: str | None
    prompts: str | None
    pairs: int
    thumbs: int
    n_prompts: int
    chat: bool
    margins: bool
    """Whether the preference rows carry a margin column."""
    desirable: int = 0
    """Thumbs up among the unpaired rows (KTO's desirable weight, when the run leaves it to the data)."""


def _header(lines: list[str]) -> str:
    """Comment lines for a script; a value read from a run (a policy name) can never end the comment and become a
    command: every line break or other control character in it is shown escaped."""
    safe = ("".join(c if c.isprintable() else repr(c)[1:-1] for c in line) for line in lines)
    return "".join(f"# {line}\n" if line else "#\n" for line in safe)


def _provenance(settings) -> list[str]:
    return [f"settings {line}" for line in settings.sources_lines()] + [f"note: {n}" for n in settings.notes]


def _batches(cfg) -> dict:
    return dict(per_device_train_batch_size=cfg.micro_batch_size,
                gradient_accumulation_steps=cfg.batch_size // cfg.micro_batch_size)


def _policy_optim(cfg) -> dict:
    return dict(lr_scheduler_type="constant", weight_decay=0.0, adam_epsilon=1e-5, max_grad_norm=cfg.max_grad_norm)


def _lora_trl(cfg) -> dict:
    if cfg.lora is None:
        return {}
    return dict(use_peft=True, lora_r=cfg.lora.r, lora_alpha=int(cfg.lora.alpha), lora_dropout=cfg.lora.dropout,
                lora_target_modules=cfg.lora.target_modules)


def _dataset(name: str, columns: list[str]) -> dict:
    return {"datasets": [{"path": "json", "data_files": name, "split": "train", "columns": columns}]}


def _yaml(header: list[str], body: dict) -> str:
    return _header(header) + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=False)


def trl_recipes(settings, data: RecipeData) -> dict[str, str]:
    """TRL CLI config files (`trl dpo|reward|kto --config FILE`, run in the export folder): model, dataset and the
    trainer config's arguments with the run's values. Only for the data written (pairs: dpo, reward; thumbs: kto)."""
    s, out = settings, {}
    form = "conversational" if data.chat else "standard"

    def header(trainer: str, file: str, rows: str) -> list[str]:
        return [f"rlhf-lab export: TRL {trainer} recipe for {file} ({rows}, {form} format).",
                f"Run it in this folder: trl {file_cmd[trainer]} --config {file_cmd[trainer]}.yaml ({TRL_VERSION}).",
                "gradient_accumulation_steps is for one GPU: divide it by the number of GPUs to keep the batch.",
                *_provenance(s)]
    file_cmd = {"DPO": "dpo", "reward": "reward", "KTO": "kto"}
    if data.preference:
        d = s.dpo
        out["dpo.yaml"] = _yaml(header("DPO", data.preference, f"{data.pairs} pairs"), {
            "model_name_or_path": s.model, **_dataset(data.preference, ["prompt", "chosen", "rejected"]),
            "output_dir": "ckpt/dpo", "learning_rate": d.learning_rate, "beta": d.beta, "loss_type": [d.loss_type],
            "label_smoothing": d.label_smoothing, **_batches(d), "num_train_epochs": d.epochs,
            "max_length": d.max_length, **_policy_optim(d), "seed": d.seed_value, **_lora_trl(d)})
        r = s.reward
        columns = ["prompt", "chosen", "rejected"] + (["margin"] if r.use_margin and data.margins else [])
        out["reward.yaml"] = _yaml(header("reward", data.preference, f"{data.pairs} pairs"), {
            "model_name_or_path": s.reward_model, **_dataset(data.preference, columns), "output_dir": "ckpt/reward",
            "learning_rate": r.learning_rate, "per_device_train_batch_size": r.batch_size,
            "gradient_accumulation_steps": 1, "num_train_epochs": r.epochs, "max_length": r.max_length,
            "lr_scheduler_type": r.lr_schedule, "weight_decay": r.weight_decay, "max_grad_norm": r.max_grad_norm,
            "disable_dropout": not r.dropout, "seed": r.seed_value})
    if data.unpaired:
        k = s.kto
        out["kto.yaml"] = _yaml(header("KTO", data.unpaired, f"{data.thumbs} thumbs"), {
            "model_name_or_path": s.model, **_dataset(data.unpaired, ["prompt", "completion", "label"]),
            "output_dir": "ckpt/kto", "learning_rate": k.learning_rate, "beta": k.beta,
            "desirable_weight": s.desirable_weight(data), "undesirable_weight": k.undesirable_weight, **_batches(k),
            "num_train_epochs": k.epochs, "max_length": k.max_length, **_policy_optim(k), "seed": k.seed_value,
            **_lora_trl(k)})
    return out


def _arg(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_arg(v) for v in value)
    return shlex.quote(str(value))


def _command(program: str, flags: dict) -> str:
    """`program --flag value ...` over continuation lines; a True value is a bare flag, None/False leave it out."""
    kept = {k: v for k, v in flags.items() if v is not None and v is not False}  # not `in (None, False)`: 0 == False
    parts = [f"--{k}" if v is True else f"--{k} {_arg(v)}" for k, v in kept.items()]
    return f"{program} \\\n      " + " \\\n      ".join(parts)


def _lora_openrlhf(cfg) -> dict:
    if cfg.lora is None:
        return {}
    modules = cfg.lora.target_modules
    return dict(lora_rank=cfg.lora.r, lora_alpha=int(cfg.lora.alpha), lora_dropout=cfg.lora.dropout,
                target_modules=[modules] if isinstance(modules, str) else list(modules))


def rl_epochs(updates: int, n_prompts: int, batch_size: int) -> int:
    """Passes over `n_prompts` prompts that give `updates` PPO updates of `batch_size` prompts (OpenRLHF's
    num_episodes, verl's total_epochs; both drop an incomplete last batch)."""
    return math.ceil(updates / max(1, n_prompts // batch_size))


def openrlhf_script(settings, data: RecipeData) -> str:
    """A bash script whose cases are ready OpenRLHF command lines: rm (reward model), dpo, kto (when there are
    thumbs) and ppo (Ray; reads the reward model `rm` saves). What OpenRLHF cannot do is added to `settings.notes`."""
    s, chat = settings, data.chat or None
    policy_optim = dict(lr_scheduler="constant", lr_warmup_ratio=0, adam_betas=[0.9, 0.999], l2=0.0, zero_stage=2,
                        param_dtype="bf16")
    cases = {}
    if data.preference:
        keys = dict(dataset=data.preference, prompt_key="prompt", chosen_key="chosen", rejected_key="rejected",
                    apply_chat_template=chat)
        r, d = s.reward, s.dpo
        cases["rm"] = _command("deepspeed --module openrlhf.cli.train_rm", dict(
            pretrain=s.reward_model, save_path="ckpt/rm", **keys, learning_rate=r.learning_rate,
            train_batch_size=r.batch_size, micro_train_batch_size=r.batch_size, max_epochs=r.epochs,
            max_len=r.max_length, lr_scheduler=r.lr_schedule, lr_warmup_ratio=0, l2=r.weight_decay,
            max_norm=r.max_grad_norm, margin_loss=r.use_margin and data.margins, seed=r.seed_value, zero_stage=2,
            param_dtype="bf16"))
        cases["dpo"] = _command("deepspeed --module openrlhf.cli.train_dpo", dict(
            pretrain=s.model, save_path="ckpt/dpo", **keys, learning_rate=d.learning_rate, beta=d.beta,
            ipo=d.loss_type == "ipo", label_smoothing=d.label_smoothing, train_batch_size=d.batch_size,
            micro_train_batch_size=d.micro_batch_size, max_epochs=d.epochs, max_len=d.max_length,
            max_norm=d.max_grad_norm, seed=d.seed_value, **policy_optim, **_lora_openrlhf(d)))
    if data.unpaired:
        k = s.kto
        cases["kto"] = _command("deepspeed --module openrlhf.cli.train_kto", dict(
            pretrain=s.model, save_path="ckpt/kto", dataset=data.unpaired, input_key="prompt",
            output_key="completion", label_key="label", apply_chat_template=chat, learning_rate=k.learning_rate,
            beta=k.beta, desirable_loss_weight=s.desirable_weight(data), undesirable_loss_weight=k.undesirable_weight,
            train_batch_size=k.batch_size, micro_train_batch_size=k.micro_batch_size, max_epochs=k.epochs,
            max_len=k.max_length, max_norm=k.max_grad_norm, seed=k.seed_value, **policy_optim, **_lora_openrlhf(k)))
    p = s.ppo
    cases["ppo"] = _command("python3 -m openrlhf.cli.train_ppo_ray", dict(
        pretrain=s.model, reward_pretrain="ckpt/rm", critic_pretrain=s.model, save_path="ckpt/ppo",
        prompt_data=data.prompts, input_key="prompt", apply_chat_template=chat, actor_learning_rate=p.learning_rate,
        critic_learning_rate=p.learning_rate, init_kl_coef=p.kl_coef, kl_target=s.kl_target_per_token(),
        kl_horizon=int(p.adaptive_kl_horizon()) if p.kl_target else None, kl_estimator=p.kl_estimator,
        eps_clip=p.clip_eps,
        value_clip=p.vf_clip, gamma=p.gamma, lambd=p.lam, advantage_estimator="gae",
        rollout_batch_size=p.batch_size, micro_rollout_batch_size=p.micro_batch_size,
        train_batch_size=p.mini_batch_size, micro_train_batch_size=p.micro_batch_size, max_epochs=p.ppo_epochs,
        num_episodes=rl_epochs(s.ppo_updates, data.n_prompts, p.batch_size), n_samples_per_prompt=1,
        prompt_max_len=s.prompt_tokens(), generate_max_len=p.sampling.max_new_tokens,
        temperature=p.sampling.temperature, top_p=p.sampling.top_p, max_norm=p.max_grad_norm, seed=p.seed_value,
        actor_num_nodes=1, actor_num_gpus_per_node=1, critic_num_nodes=1, critic_num_gpus_per_node=1,
        ref_num_nodes=1, ref_num_gpus_per_node=1, reward_num_nodes=1, reward_num_gpus_per_node=1,
        **policy_optim, **_lora_openrlhf(p)))
    if data.preference and s.dpo.loss_type == "robust":
        s.notes.append("OpenRLHF has no robust DPO: its dpo case runs DPO with label_smoothing (conservative DPO)")
    usage = "|".join(cases)
    body = "".join(f"  {name})\n    {command} ;;\n" for name, command in cases.items())
    return ("#!/usr/bin/env bash\n" + _header([
        f"rlhf-lab export: OpenRLHF recipe; {OPENRLHF_VERSION}.",
        f"bash openrlhf.sh {usage}   (rm first: ppo reads the reward model it saves in ckpt/rm;",
        "dpo and kto train the policy from the judgments directly). One GPU per model in ppo; adjust the *_num_gpus_"
        "per_node flags to your cluster.", *_provenance(s)]) +
        f'set -euo pipefail\ncd "$(dirname "$0")"\ncase "${{1:-}}" in\n{body}'
        f'  *)\n    echo "usage: bash $0 {usage}" >&2; exit 2 ;;\nesac\n')


def _verl_config(settings, data: RecipeData) -> dict:
    s, p = settings, settings.ppo
    micro, target = p.micro_batch_size, s.kl_target_per_token()
    model = {"path": s.model}
    if p.lora is not None:
        model.update(lora_rank=p.lora.r, lora_alpha=int(p.lora.alpha), target_modules=p.lora.target_modules)
    kl_ctrl = {"type": "adaptive" if target else "fixed", "kl_coef": p.kl_coef}
    if target:
        kl_ctrl.update(target_kl=target, horizon=int(p.adaptive_kl_horizon()))
    return {
        "data": {"train_files": data.prompts, "val_files": data.prompts, "prompt_key": "prompt",
                 "train_batch_size": p.batch_size, "max_prompt_length": s.prompt_tokens(),
                 "max_response_length": p.sampling.max_new_tokens, "filter_overlong_prompts": True},
        "actor_rollout_ref": {
            "model": model,
            "actor": {"optim": {"lr": p.learning_rate, "weight_decay": 0.0, "lr_warmup_steps_ratio": 0.0},
                      "ppo_mini_batch_size": p.mini_batch_size, "ppo_micro_batch_size_per_gpu": micro,
                      "ppo_epochs": p.ppo_epochs, "clip_ratio": p.clip_eps, "grad_clip": p.max_grad_norm,
                      "use_kl_loss": False, "entropy_coeff": 0.0},
            "rollout": {"name": "vllm", "temperature": p.sampling.temperature, "top_p": p.sampling.top_p,
                        "top_k": p.sampling.top_k or -1, "n": 1, "log_prob_micro_batch_size_per_gpu": micro},
            "ref": {"log_prob_micro_batch_size_per_gpu": micro}},
        "critic": {"model": {"path": s.model}, "optim": {"lr": p.learning_rate, "weight_decay": 0.0},
                   "ppo_micro_batch_size_per_gpu": micro, "cliprange_value": p.vf_clip, "grad_clip": p.max_grad_norm},
        "reward_model": {"enable": True, "model": {"path": f"${{oc.env:{REWARD_MODEL_ENV}}}"},
                         "micro_batch_size_per_gpu": micro},
        "algorithm": {"adv_estimator": "gae", "gamma": p.gamma, "lam": p.lam, "use_kl_in_reward": True,
                      "kl_penalty": "kl", "kl_ctrl": kl_ctrl},
        "trainer": {"total_epochs": rl_epochs(s.ppo_updates, data.n_prompts, p.batch_size),
                    "total_training_steps": s.ppo_updates, "nnodes": 1, "n_gpus_per_node": 1, "logger": ["console"],
                    "project_name": "rlhf-lab", "experiment_name": s.run_name, "val_before_train": False,
                    "test_freq": -1},
    }


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _override(key: str, value) -> str:
    if value == f"${{oc.env:{REWARD_MODEL_ENV}}}":
        return f'{key}="${REWARD_MODEL_ENV}"'
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return shlex.quote(f"{key}={text}")


def verl_recipe(settings, data: RecipeData) -> tuple[str, str]:
    """(verl.yaml, verl.sh): verl's PPO config keys with the run's values, nested, and the same keys as the
    overrides of `python3 -m verl.trainer.main_ppo`. The reward model's path comes from $REWARD_MODEL."""
    config = _verl_config(settings, data)
    header = [f"rlhf-lab export: verl PPO recipe for {data.prompts} ({data.n_prompts} prompts); {VERL_VERSION}.",
              f"The reward model: a sequence-classification model, e.g. the one `rlhf-lab export --to openrlhf` "
              f"trains (`bash openrlhf.sh rm`); its path in ${REWARD_MODEL_ENV}.", *_provenance(settings)]
    body = "".join(f" \\\n    {_override(k, v)}" for k, v in _flatten(config).items())
    script = ("#!/usr/bin/env bash\n" + _header(header + ["Run: REWARD_MODEL=/path/to/rm bash verl.sh"]) +
              f'set -euo pipefail\n: "${{{REWARD_MODEL_ENV}:?set {REWARD_MODEL_ENV} to a reward model\'s path}}"\n'
              f'cd "$(dirname "$0")"\npython3 -m verl.trainer.main_ppo{body}\n')
    return _yaml(header + ["The same keys as verl.sh passes to python3 -m verl.trainer.main_ppo, relative to this "
                           "folder."], config), script
