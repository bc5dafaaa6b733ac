"""KTO from thumbs vs DPO from pairs at equal judgments, on the simulated crowd (issue #18, figure 2).

    python bench/kto_vs_dpo.py                         # SmolLM2, seeds 0,1,2, 48 judgments of each kind
    python bench/kto_vs_dpo.py --model tiny --seeds 0 --judgments 8 --eval-prompts 4    # a quick check

For each seed: the policy samples 2 replies to each of N training prompts. One simulated annotator with the gold
taste (Boltzmann-rational, rationality 5, the crowd's default) judges them twice over, in two separate stores:
  - pairs:  N pairwise choices, one per prompt (both replies)                       → DPO
  - thumbs: N thumbs, one per prompt (on the first reply of odd prompts, the second of even ones) → KTO
  - thumbs on every reply (2N thumbs: as many replies read as the pairs)          → KTO (2N), for reference
Each method trains the same starting policy (full fine-tuning, AdamW, the same learning rate, β, batch and epochs),
then every policy (and the start) writes 4 replies to each of M held-out prompts (the same sampling seed), scored by
the gold utility. Per seed: each method's gold gain over the start, paired by prompt (95 % bootstrap), and
KTO − DPO paired by prompt. Over seeds: means with a 95 % t-interval and differences paired by seed. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

from rlhf_lab.core.machine import machine_info
from rlhf_lab.loop.evaluation import t_interval

METHODS = ("dpo", "kto", "kto_2n")


def judged_stores(policy, tokenizer, prompts, sampling, seed: int):
    """(pairs store, thumbs-on-one-reply store, thumbs-on-every-reply store) of one simulated gold annotator."""
    from rlhf_lab.feedback.crowd import SimulatedAnnotator
    from rlhf_lab.feedback.store import FeedbackStore
    from rlhf_lab.teach.every_kind import sample_items

    pairs = FeedbackStore(":memory:")
    items = sample_items(pairs, policy, tokenizer, prompts, sampling, size=2, kind="pairwise", seed=seed)
    annotator = SimulatedAnnotator("learner", seed=seed)
    annotator.annotate(pairs, items)
    one, every = FeedbackStore(":memory:"), FeedbackStore(":memory:")
    records = [dict(prompt=r.prompt, response=r.text, model=r.model, iteration=r.iteration)
               for it in items for r in it.responses]
    ids = one.add_responses(records)
    annotator.annotate_replies(one, [ids[2 * i + i % 2] for i in range(len(items))], ("thumbs",))
    annotator.annotate_replies(every, every.add_responses(records), ("thumbs",))
    return pairs, one, every


def one_seed(seed: int, args) -> dict:
    from rlhf_lab import SamplingConfig, load_policy, load_prompts, set_seed
    from rlhf_lab.feedback.preferences import unpaired_examples
    from rlhf_lab.loop.evaluation import paired_gain
    from rlhf_lab.teach.lessons import score_replies
    from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
    from rlhf_lab.train.kto import KTOConfig, KTOTrainer

    t0 = time.perf_counter()
    set_seed(seed)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.9)
    train = load_prompts("all", split="train", max_words=24, n=args.judgments, seed=seed)
    held_out = load_prompts("all", split="eval", max_words=24, n=args.eval_prompts, seed=seed)
    policy, tokenizer = load_policy(args.model)
    pairs, one, every = judged_stores(policy, tokenizer, train, sampling, seed)
    data = {"dpo": pairs.preference_pairs(), "kto": unpaired_examples(one), "kto_2n": unpaired_examples(every)}
    n = {"pairs": len(data["dpo"]), "thumbs": len(data["kto"]), "thumbs_2n": len(data["kto_2n"]),
         "thumbs_up_share": float(data["kto"]["label"].mean())}

    def evaluate(model):
        table = score_replies(model, tokenizer, held_out, sampling, seed=seed + 1, n_per_prompt=args.eval_samples)
        return table["gold"].to_numpy().reshape(len(held_out), args.eval_samples)

    before = evaluate(policy)
    common = dict(learning_rate=args.lr, beta=args.beta, batch_size=args.batch, epochs=args.epochs,
                  sampling=sampling, seed=seed)
    after, seconds = {}, {}
    for method in METHODS:
        fresh, _ = load_policy(args.model)
        t = time.perf_counter()
        trainer, config = (DPOTrainer, DPOConfig) if method == "dpo" else (KTOTrainer, KTOConfig)
        trained = trainer(fresh, tokenizer, config(**common), callbacks=[]).fit(data[method])
        seconds[method] = time.perf_counter() - t
        after[method] = evaluate(trained.policy)
    out = dict(seed=seed, judgments=n, gold_before=float(before.mean()), seconds=seconds)
    for method in METHODS:
        out[method] = paired_gain(before, after[method], seed=seed).to_dict()
    out["kto_minus_dpo"] = paired_gain(after["dpo"], after["kto"], seed=seed).to_dict()
    out["kto_2n_minus_dpo"] = paired_gain(after["dpo"], after["kto_2n"], seed=seed).to_dict()
    out["wall_s"] = time.perf_counter() - t0
    return out


def report(runs: list[dict], args) -> dict:
    from rlhf_lab.loop.evaluation import verdict

    seeds = [r["seed"] for r in runs]
    print(f"KTO from thumbs vs DPO from pairs at {args.judgments} judgments each ({args.model}, lr {args.lr}, "
          f"beta {args.beta}, batch {args.batch}, {args.epochs} epoch(s)); gold utility on {args.eval_prompts} "
          f"held-out prompts x {args.eval_samples} replies (mean over seeds {seeds}, 95 % t-interval)")
    figures = {}
    for name, key in [("gold_before", None), *[(f"gain_{m}", m) for m in METHODS],
                      ("kto_minus_dpo", "kto_minus_dpo"), ("kto_2n_minus_dpo", "kto_2n_minus_dpo")]:
        values = [r["gold_before"] if key is None else r[key]["gain"] for r in runs]
        mean, lo, hi = t_interval(values)
        figures.update({name: round(mean, 4), f"{name}_ci_low": round(lo, 4), f"{name}_ci_high": round(hi, 4)})
        said = "" if key is None else f": {verdict(lo, hi)}" if len(runs) > 1 else ""
        print(f"   {name:<22} {mean:+.3f} [{lo:+.3f}, {hi:+.3f}]{said}")
    for r in runs:
        parts = [f"{m} {r[m]['gain']:+.3f} [{r[m]['ci_low']:+.3f}, {r[m]['ci_high']:+.3f}]" for m in METHODS]
        k = r["kto_minus_dpo"]
        print(f"   seed {r['seed']}: gold {r['gold_before']:.3f}; gains (paired by prompt, bootstrap) "
              + "; ".join(parts) + f"; kto - dpo {k['gain']:+.3f} [{k['ci_low']:+.3f}, {k['ci_high']:+.3f}]; "
              f"{r['judgments']['thumbs_up_share']:.2f} of thumbs up; training s "
              + ", ".join(f"{m} {s:.0f}" for m, s in r["seconds"].items()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judgments", type=int, default=48, help="N: pairwise choices and thumbs, each")
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5, help="both methods (lesson 9's KTO step)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    runs = []
    for seed in seeds:
        runs.append(one_seed(seed, args))
        r = runs[-1]
        print(f"seed {seed} done in {r['wall_s']:.0f} s: " + ", ".join(f"{m} {r[m]['gain']:+.3f}" for m in METHODS),
              flush=True)
    figures = report(runs, args)
    settings = {k: getattr(args, k) for k in ("model", "judgments", "eval_prompts", "eval_samples", "max_new_tokens",
                                              "lr", "beta", "batch", "epochs")}
    print(json.dumps({"machine": machine_info(), "seeds": seeds, **figures, "settings": settings,
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
