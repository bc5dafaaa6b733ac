"""Human feedback: records, the judgment store, preference pairs, the simulated crowd and agreement (samples →
judgments → training signal)."""
