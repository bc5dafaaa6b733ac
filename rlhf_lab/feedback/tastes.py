"""Scripted tastes and the simulated learner who judges by one: stand-ins for a person at the rater, for tests,
benches and headless lessons.

    taste = load_taste("short")                     # or "questions", "enthusiastic", "formal", "gold",
    taste = load_taste("my_module:my_taste")        # a function (prompt, reply) -> float of your own (cwd, PYTHONPATH)
    learner = SimulatedLearner(taste, name="me (simulated)", rationality=3.0, seed=0)
    learner.annotate(store, items)                  # pairwise judgments through the store, as a person's

A taste is a utility u(prompt, reply): higher is better. The learner is Boltzmann-rational, like the crowd:
P(A ≻ B) = σ(β·(u_A − u_B)), with β its `rationality`; each judgment's randomness depends only on (seed, item), so
the same seed gives the same judgments in any order. The shipped tastes are scaled so that a clear difference
between two replies is about one unit.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import re
import site
import sys
import sysconfig
from pathlib import Path
from typing import Callable

import numpy as np

from rlhf_lab.feedback.gold import GoldUtility
from rlhf_lab.feedback.validation import need_store

__all__ = ["TASTES", "Taste", "load_taste", "check_taste", "SimulatedLearner", "short_replies", "asks_back",
           "enthusiastic", "formal", "gold_taste"]

Taste = Callable[[str, str], float]
_WORD = re.compile(r"[A-Za-z0-9']+")
_CONTRACTION = re.compile(r"\b\w+'(s|re|ve|ll|d|m|t)\b", re.I)
_INFORMAL = frozenset("hey hi yeah yep nope lol gonna wanna gotta kinda sorta ok okay cool awesome stuff guys "
                      "dude wow omg btw haha".split())


def short_replies(prompt: str, reply: str) -> float:
    """Prefers brevity: −words/5 (five words shorter is one unit better)."""
    return -len(_WORD.findall(reply)) / 5


def asks_back(prompt: str, reply: str) -> float:
    """Prefers replies that ask a question back: one point per question (at most 2), half a point more when the
    reply ends on one."""
    return min(reply.count("?"), 2) + 0.5 * reply.rstrip().endswith("?")


def enthusiastic(prompt: str, reply: str) -> float:
    """Prefers warm, excited replies: 2 × VADER's compound sentiment plus ½ per exclamation mark (at most 3)."""
    from rlhf_lab.feedback.gold import gold_features

    return 2 * gold_features(prompt, reply)["sentiment"] + 0.5 * min(reply.count("!"), 3)


def formal(prompt: str, reply: str) -> float:
    """Prefers a formal register: −1 per contraction, informal word or exclamation mark; +½ for a reply that starts
    with a capital and ends with a full stop."""
    words = [w.lower() for w in _WORD.findall(reply)]
    casual = len(_CONTRACTION.findall(reply)) + sum(w in _INFORMAL for w in words) + reply.count("!")
    tidy = bool(reply[:1].isupper()) and reply.rstrip().endswith(".")
    return -float(casual) + 0.5 * tidy


_GOLD = GoldUtility()


def gold_taste(prompt: str, reply: str) -> float:
    """The simulated crowd's gold utility (a blend of six features: the hardest shipped taste to learn)."""
    return _GOLD.utility(prompt, reply)


TASTES: dict[str, Taste] = {"short": short_replies, "questions": asks_back, "enthusiastic": enthusiastic,
                            "formal": formal, "gold": gold_taste}


_MODULE_FUNCTION = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def check_taste(spec) -> None:
    """Refuse, in one line, what `load_taste` could not load, without importing anything: a config read from a file
    (a run's config.json) is checked this way, so opening someone's run never runs their code. A "module:function"
    taste is imported only when its simulated learner judges or is evaluated."""
    if callable(spec):
        return
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"A taste is a name ({', '.join(TASTES)}), 'module:function' or a function; got {spec!r}.")
    if spec not in TASTES and not _MODULE_FUNCTION.fullmatch(spec):
        raise ValueError(f"Unknown taste {spec!r}: use one of {', '.join(TASTES)}, or 'module:function' for your own "
                         "function (prompt, reply) -> float.")


def _not_your_own(module_name: str) -> str | None:
    """Why `module_name` is not a taste module a learner wrote (the standard library, rlhf-lab, an installed
    package), else None. Found without running the module: a shared run's config may name any function with two
    parameters (shutil:rmtree, os:rename), which its stand-in would call on the run's own prompts and replies."""
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "is part of Python's standard library"
    if top == "rlhf_lab":
        return "is rlhf-lab itself"
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: located, not imported
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    places = [spec.origin] if spec.origin not in (None, "namespace") else list(spec.submodule_search_locations or [])
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")} | set(site.getsitepackages())
    roots.add(site.getusersitepackages())  # pip install --user
    for place in places:
        if place in ("built-in", "frozen"):
            return "is built into Python"
        for root in roots:
            if Path(place).resolve().is_relative_to(Path(root).resolve()):
                return f"is an installed package (in {root})"
    return None


def load_taste(spec) -> Taste:
    """A taste by name (`TASTES`), as "module:function" (imported from the current directory or PYTHONPATH; a module
    of the standard library, rlhf-lab or an installed package is refused: `_not_your_own`), or a callable
    (prompt, reply) -> float given as is."""
    check_taste(spec)
    if callable(spec):
        return spec
    if spec in TASTES:
        return TASTES[spec]
    module_name, _, function = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    why = _not_your_own(module_name)
    if why is not None:
        raise ValueError(f"The taste {spec!r} is refused: {module_name} {why}, not a taste of your own; write "
                         f"def {function}(prompt, reply) in a .py file of your own and name that module.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"Cannot import {module_name!r} for the taste {spec!r} ({err}); put {module_name}.py in the "
                         "current directory or on PYTHONPATH.") from None
    taste = getattr(module, function, None)
    if not callable(taste):
        raise ValueError(f"{module_name!r} has no function {function!r} for the taste {spec!r}.")
    try:
        inspect.signature(taste).bind("prompt", "reply")
    except TypeError:
        raise ValueError(f"The taste {spec!r} must take (prompt, reply) and return a number; {function} takes "
                         f"{inspect.signature(taste)}.") from None
    except ValueError:  # no signature to read (some built-ins): it is tried as it is
        pass
    return taste


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0)))


class SimulatedLearner:
    """A learner who judges pairs by one taste, Boltzmann-rationally, through the store's public API.

    taste: a `Taste` or anything `load_taste` takes. rationality: β of P(A ≻ B) = σ(β·(u_A − u_B)) (0: coin flips).
    name: the annotator id written to the store. seed: same seed, same judgments (whatever the order).
    """

    def __init__(self, taste, name: str = "learner (simulated)", rationality: float = 3.0, seed: int = 0):
        if not (isinstance(rationality, (int, float)) and math.isfinite(rationality) and rationality >= 0):
            raise ValueError(f"rationality must be a finite number >= 0, got {rationality!r}.")
        self.taste, self.name, self.rationality, self.seed = load_taste(taste), name, float(rationality), seed

    def __repr__(self) -> str:
        return f"SimulatedLearner({getattr(self.taste, '__name__', self.taste)!r}, rationality={self.rationality})"

    def utility(self, prompts, responses) -> np.ndarray:
        """The taste's utilities of a batch of replies, (N,)."""
        return np.array([float(self.taste(p, r)) for p, r in zip(prompts, responses)], dtype=np.float64)

    def choose(self, prompt: str, reply_a: str, reply_b: str, key: int) -> str:
        """"A" or "B" for one pair; `key` (e.g. the item id) fixes the coin."""
        u_a, u_b = self.utility([prompt, prompt], [reply_a, reply_b])
        coin = np.random.default_rng([self.seed, int(key)]).random()
        return "A" if coin < _sigmoid(self.rationality * (u_a - u_b)) else "B"

    def annotate(self, store, items=None, keys=None) -> list[int]:
        """Judge pairwise `items` (Items or ids; default: every pairwise item this learner has not judged) and record
        each through `store.record_pairwise`. Items already judged are skipped, so a rerun resumes. Returns the new
        judgment ids.

        keys: the coin's key for each of `items` (default: the item ids). The taste loop passes 1, 2, … (the ids
        in a fresh store), so a run into a folder whose store already holds items judges as it would alone."""
        need_store(store, "annotate")
        store.register_annotator(self.name, "simulated", f"a simulated learner (rationality {self.rationality})")
        pending = store.pending_items(self.name, "pairwise")
        todo = {it.id for it in pending}
        items = pending if items is None else [it if hasattr(it, "id") else store.get_item(it) for it in items]
        keys = [item.id for item in items] if keys is None else list(keys)
        if len(keys) != len(items):
            raise ValueError(f"annotate got {len(keys)} keys for {len(items)} items: give one key per item.")
        ids = []
        for item, key in zip(items, keys):
            if item.id not in todo or item.kind != "pairwise":
                continue
            a, b = item.responses
            ids.append(store.record_pairwise(item.id, self.name, self.choose(item.prompt, a.text, b.text, key)))
        return ids
