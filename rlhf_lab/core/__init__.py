"""Shared plumbing every stage uses: seeding, atomic files and checkpoints, configs, errors, Hugging Face helpers."""
