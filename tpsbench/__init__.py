"""tpsbench: throughput benchmarking of dense and MoE transformer training on GPUs."""

__version__ = "0.1.0"
