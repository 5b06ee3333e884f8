"""Analyses of results: comparisons across runs and GPUs, verdicts, regression checks (pure)."""
