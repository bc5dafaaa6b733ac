"""Errors shared across stages."""

from __future__ import annotations

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """Training went wrong numerically (a NaN/inf loss, score or gradient) or the KL to the reference exploded.

    Every trainer (PPO, RLOO, DPO) raises this one type; the message says which quantity and what to try."""
