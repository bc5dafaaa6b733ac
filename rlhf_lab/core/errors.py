"""Errors shared across stages."""

from __future__ import annotations

__all__ = ["TrainingDivergedError", "SetupError"]


class TrainingDivergedError(RuntimeError):
    """Training went wrong numerically (a NaN/inf loss, score or gradient) or the KL to the reference exploded.

    Every trainer (PPO, RLOO, DPO) raises this one type; the message says which quantity and what to try."""


class SetupError(RuntimeError):
    """Something outside the lab is missing or refused (a server binary, a folder's permissions). The message says
    how to fix it; the CLI prints it as one line and exits 2."""
