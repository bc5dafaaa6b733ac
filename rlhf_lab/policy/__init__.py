"""The policy: loading models and tokenizers, prompt sets, and batched sampling (prompts → samples)."""
