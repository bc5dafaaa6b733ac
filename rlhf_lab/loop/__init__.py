"""The loop: an RLHF run iteration after iteration, ablations, method comparisons, evaluation, reports and plots."""
