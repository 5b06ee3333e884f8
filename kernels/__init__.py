"""Triton kernels for the MoE path. Imports only torch and triton (design: ../shared/DESIGN.md)."""
