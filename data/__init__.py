"""Curated prompt sets shipped with rlhf-lab (JSONL, one {"prompt": ...} object per line)."""
