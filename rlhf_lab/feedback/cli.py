"""`rlhf-lab feedback ...`: fill a store with simulated judgments, summarise it, export it.

    rlhf-lab feedback simulate --store runs/feedback.db --annotators 5 --items 40 --seed 0 --model corpus
    rlhf-lab feedback stats --store runs/feedback.db --json
    rlhf-lab feedback export --store runs/feedback.db --format jsonl --out prefs.jsonl   # --force replaces a file

`add_feedback_commands(subparsers)` adds the `feedback` command to the `rlhf-lab` parser; each leaf sets
`func(args)`. `main(argv)` runs the feedback commands on their own (used by the tests).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from rlhf_lab.core.errors import SetupError
from rlhf_lab.core.script import OneLineParser, command_status
from rlhf_lab.feedback.agreement import panel_agreement
from rlhf_lab.feedback.crowd import SimulatedCrowd
from rlhf_lab.feedback.database import refuse_foreign_sqlite, sqlite_file, store_url
from rlhf_lab.feedback.store import FeedbackStore

__all__ = ["corpus_pairs", "feedback_stats", "add_feedback_commands", "main"]


@lru_cache(maxsize=1)
def _corpus_replies() -> dict[str, tuple[str, ...]]:
    """prompt -> the distinct replies that follow it in the English chatterbot corpus."""
    import yaml

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("--model corpus needs the chatterbot corpus: pip install chatterbot-corpus")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "english"
    replies: dict[str, list[str]] = {}
    for path in sorted(root.glob("*.yml")):
        for convo in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            turns = [str(t).strip() for t in convo]
            for prompt, reply in zip(turns, turns[1:]):
                if len(prompt.split()) < 2 or len(reply) < 3:  # the corpus has a few one-letter "conversations"
                    continue
                if reply not in replies.setdefault(prompt, []):
                    replies[prompt].append(reply)
    return {p: tuple(r) for p, r in replies.items()}


def corpus_pairs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """`n` (prompt, reply_1, reply_2) triples from the chatterbot corpus (English), no model needed.

    Prompts with two or more different replies in the corpus come first; the rest pair the corpus reply with a reply
    to another prompt (an off-topic distractor). Seeded; prompts repeat only when n exceeds the corpus.
    """
    replies = _corpus_replies()
    rng = np.random.default_rng(seed)
    prompts = sorted(replies)
    rich = [p for p in prompts if len(replies[p]) >= 2]
    poor = [p for p in prompts if len(replies[p]) < 2]
    order = [rich[i] for i in rng.permutation(len(rich))] + [poor[i] for i in rng.permutation(len(poor))]
    every_reply = [r for p in prompts for r in replies[p]]
    out = []
    for i in range(n):
        prompt = order[i % len(order)]
        if len(replies[prompt]) >= 2:
            a, b = rng.choice(len(replies[prompt]), size=2, replace=False)
            pair = [replies[prompt][a], replies[prompt][b]]
        else:
            distractor = replies[prompt][0]
            while distractor == replies[prompt][0]:
                distractor = every_reply[rng.integers(len(every_reply))]
            pair = [replies[prompt][0], distractor]
            rng.shuffle(pair)
        out.append((prompt, pair[0], pair[1]))
    return out


def _reply_records(args) -> list[dict]:
    """2 x items response records (two replies per prompt, adjacent) from the corpus or a policy."""
    if args.model == "corpus":
        triples = corpus_pairs(args.items, seed=args.seed)
        sampling = {"source": "chatterbot-corpus", "seed": args.seed}
        return [dict(prompt=p, response=r, model="corpus", iteration=args.iteration, sampling=sampling, eos=True)
                for p, a, b in triples for r in (a, b)]
    from rlhf_lab.policy.generation import SamplingConfig, generate
    from rlhf_lab.policy.models import load_policy
    from rlhf_lab.policy.prompts import load_prompts

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature)  # checked first
    pool = load_prompts(args.prompt_set, split="train", max_words=24)
    order = np.random.default_rng(args.seed).permutation(len(pool))
    prompts = [pool[order[i % len(pool)]] for i in range(args.items)]
    model, tokenizer = load_policy(args.model)
    batch = generate(model, tokenizer, prompts, sampling, seed=args.seed, n_per_prompt=2,
                     iteration=args.iteration)
    return batch.to_records()


def _items_for(store: FeedbackStore, pairs: list[list[dict]]) -> list:
    """The store's items for these reply pairs: those a killed run with the same arguments already made, and new
    ones (replies and items in one transaction) for the rest. A rerun resumes; the crowd skips what it judged."""
    def key(prompt, texts, model, iteration):
        return prompt, tuple(texts), model, iteration

    there: dict = {}
    for it in store.items(kind="pairwise"):
        there.setdefault(key(it.prompt, [r.text for r in it.responses], it.model, it.iteration), []).append(it)
    found = []
    for a, b in pairs:
        same = there.get(key(a["prompt"], [a["response"], b["response"]], a["model"], a["iteration"]))
        found.append(same.pop(0) if same else None)
    new = iter(store.add_response_groups([r for pair, it in zip(pairs, found) if it is None for r in pair]))
    return [it if it is not None else store.get_item(next(new)) for it in found]


def cmd_simulate(args) -> None:
    """Each of N simulated annotators judges the same M pairwise items: N x M judgments (N = 0: only the items,
    for people to judge, e.g. a class). Every input is checked, and the replies made, before the store is opened:
    a bad option or model leaves no new (empty) store behind."""
    if args.seed < 0:
        raise ValueError(f"--seed must be 0 or more, got {args.seed}")
    if args.annotators < 0 or args.items < 1:
        raise ValueError("--annotators must be 0 or more and --items at least 1")
    if not (math.isfinite(args.rationality) and args.rationality >= 0):
        raise ValueError(f"--rationality must be a finite number >= 0 (0: coin flips, 5: the default), got "
                         f"{args.rationality}")
    if not 0 <= args.careless <= args.annotators:
        raise ValueError(f"--careless counts annotators: from 0 to --annotators ({args.annotators}), got "
                         f"{args.careless}")
    refuse_foreign_sqlite(store_url(args.store, make_folders=False))  # a folder or another program's file: at once
    records = _reply_records(args)
    store = FeedbackStore(args.store)
    items = _items_for(store, [records[i:i + 2] for i in range(0, len(records), 2)])
    if args.annotators == 0:
        print(f"wrote {len(items)} pairwise items (no judgments) to {store.display_url}")
        store.close()
        return
    crowd = SimulatedCrowd(n=args.annotators, rationality=args.rationality, n_careless=args.careless,
                           seed=args.seed)
    judgments = crowd.annotate(store, items)
    print(f"wrote {len(judgments)} judgments ({args.annotators} annotators x {len(items)} items) to "
          f"{store.display_url}")
    store.close()


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _jsonable(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


def feedback_stats(store: FeedbackStore) -> dict:
    """Counts (by kind, annotator, iteration; grand total under `total`) plus pairwise panel agreement."""
    stats = store.counts()
    stats["agreement"] = panel_agreement(store, "pairwise")
    return _jsonable(stats)


def cmd_stats(args) -> None:
    store = FeedbackStore(args.store, create=False)
    stats = feedback_stats(store)
    store.close()
    if args.json:
        print(json.dumps(stats, indent=2))
        return
    print(f"{'total':<22} {stats['total']} judgments, {stats['items']} items, {stats['responses']} responses")
    for group in ("by_kind", "by_annotator", "by_iteration", "pairwise_choices"):
        print(f"{group:<22} " + ", ".join(f"{k}: {v}" for k, v in stats[group].items()))
    agree = stats["agreement"]
    print(f"{'agreement (pairwise)':<22} Fleiss kappa {_fmt(agree['fleiss_kappa'])}, Krippendorff alpha "
          f"{_fmt(agree['krippendorff_alpha'])}, mean Cohen kappa {_fmt(agree['mean_cohen_kappa'])} "
          f"over {agree['units']} items, {agree['annotators']} annotators")


def _export_path(args) -> Path:
    """Where `feedback export` writes: --out, else the store's path with the format's suffix. Refused: a URL store
    without --out, a folder, the store's own file (or its -wal/-shm/-journal), an existing file without --force."""
    store_file = sqlite_file(store_url(args.store, make_folders=False))
    if args.out is None and "://" in args.store:
        raise ValueError(f"--store is a URL: give --out, the file to write (e.g. --out prefs.{args.format})")
    out = Path(args.out or Path(args.store).with_suffix(f".{args.format}")).expanduser()
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as {out / ('prefs.' + args.format)}")
    if store_file is not None:
        store_file = store_file.expanduser().resolve()
        own = [store_file.with_name(store_file.name + end) for end in ("", "-wal", "-shm", "-journal")]
        if out.resolve() in own or any(f.exists() and out.exists() and out.samefile(f) for f in own):
            raise ValueError(f"{out} is the store's own file: give another file with --out, e.g. --out "
                             f"prefs.{args.format}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists: give another --out, or add --force to replace it")
    return out


def cmd_export(args) -> None:
    out = _export_path(args)
    store = FeedbackStore(args.store, create=False)
    n = store.export_jsonl(out, include_ties=args.include_ties) if args.format == "jsonl" else store.export_csv(out)
    store.close()
    print(f"wrote {n} {'preference pairs' if args.format == 'jsonl' else 'judgments'} to {out}")


def add_feedback_commands(subparsers) -> argparse.ArgumentParser:
    """Add `feedback simulate | stats | export` to an argparse subparsers object; returns the `feedback` parser."""
    feedback = subparsers.add_parser("feedback", help="simulate, summarise and export human-feedback judgments")
    sub = feedback.add_subparsers(dest="feedback_command", required=True)

    sim = sub.add_parser("simulate", help="N simulated annotators each judge the same M pairwise items")
    sim.add_argument("--store", required=True, help="store path (SQLite file) or database URL")
    sim.add_argument("--annotators", type=int, default=5,
                     help="N, the size of the simulated crowd (0: only create the items)")
    sim.add_argument("--items", type=int, default=20, help="M, the number of pairwise items (prompt + 2 replies)")
    sim.add_argument("--seed", type=int, default=0, help="seeds the replies and the crowd")
    sim.add_argument("--model", default="smollm2-135m",
                     help="where replies come from: a policy (tiny, smollm2-135m, hub id, dir) or 'corpus'")
    sim.add_argument("--prompt-set", default="curated", help="prompts for a policy: curated, chitchat, chatterbot, all")
    sim.add_argument("--iteration", type=int, default=0, help="the policy iteration recorded with the replies")
    sim.add_argument("--rationality", type=float, default=5.0, help="beta of the Bradley-Terry choice")
    sim.add_argument("--careless", type=int, default=0, help="how many of the annotators answer mostly at random")
    sim.add_argument("--max-new-tokens", type=int, default=32)
    sim.add_argument("--temperature", type=float, default=0.7)
    sim.set_defaults(func=cmd_simulate)

    stats = sub.add_parser("stats", help="counts by kind, annotator and iteration, and agreement")
    stats.add_argument("--store", required=True)
    stats.add_argument("--json", action="store_true", help="print a JSON object (grand total under 'total')")
    stats.set_defaults(func=cmd_stats)

    export = sub.add_parser("export", help="export preference pairs (jsonl) or all judgments (csv: a text that "
                            "starts with = + - @ gets a leading ' so a spreadsheet never runs it as a formula)")
    export.add_argument("--store", required=True)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--out", default=None,
                        help="output file (default: the store path with .jsonl/.csv; needed for a URL store)")
    export.add_argument("--include-ties", action="store_true", help="also write tie pairs (jsonl)")
    export.add_argument("--force", action="store_true", help="replace --out if it exists (never the store itself)")
    export.set_defaults(func=cmd_export)
    return feedback


def main(argv: list[str] | None = None) -> int:
    """Run `feedback ...` commands without the rest of the rlhf-lab CLI; returns the exit status."""
    parser = OneLineParser(prog="rlhf-lab")
    add_feedback_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return command_status("rlhf-lab feedback", lambda: args.func(args),
                          (ModuleNotFoundError, ValueError, FileNotFoundError, FileExistsError, PermissionError,
                           SetupError))  # as rlhf-lab's own main: a model that is not there is one line too


if __name__ == "__main__":
    sys.exit(main())
