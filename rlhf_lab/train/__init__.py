"""Policy optimisation: PPO maths, the policy with its value head, one on-policy trainer base (PPO, RLOO), DPO,
best-of-n and training callbacks (reward model → new policy)."""
