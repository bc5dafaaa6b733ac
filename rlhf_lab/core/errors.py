"""Errors shared across stages."""

from __future__ import annotations

__all__ = ["TrainingDivergedError", "SetupError", "NotFittedError", "not_fitted"]


class TrainingDivergedError(RuntimeError):
    """Training went wrong numerically (a NaN/inf loss, score or gradient) or the KL to the reference exploded.

    Every trainer (PPO, RLOO, DPO) raises this one type; the message says which quantity and what to try."""


class SetupError(RuntimeError):
    """Something outside the lab is missing or refused (a server binary, a folder's permissions). The message says
    how to fix it; the CLI prints it as one line and exits 2."""


class NotFittedError(ValueError):
    """A model was asked to score (or save, or be evaluated) before it was fitted or loaded: it would only have
    numbers from an untrained head. The message says which call fits it and which loads one."""


def not_fitted(model, fit: str = "fit(pairs)") -> NotFittedError:
    """The error for `model` (a reward or cost model) used before `fit`/`load`, naming its class's `load`."""
    what = "cost model" if type(model).__name__ == "CostModel" else "reward model"
    return NotFittedError(f"this {what} is not fitted yet: call {fit} first, or load one with "
                          f"{type(model).__name__}.load(path)")
