"""Reward: the Bradley–Terry network and loss, reward models and ensembles, their evaluation, and reward sources
(judgments → reward model)."""
