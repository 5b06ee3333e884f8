"""Hardware counters (NVML, and GPM where the GPU has it) sampled during each measured window."""
