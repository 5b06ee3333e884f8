"""Measurement: timers, statistics, micro (layer) and end-to-end (training step) benchmarks."""
