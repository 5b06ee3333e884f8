"""PyTorch modules built from zoo specs."""
