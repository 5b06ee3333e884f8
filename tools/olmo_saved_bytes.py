"""Measure what OLMo-core's blocks and loss keep alive for the backward (the constants of
tpsbench/estimate/olmo_memory.py), on the CPU.

Builds OLMo-core models from small variants of a zoo model with bf16 parameters (what FSDP's mixed precision
unshards), runs a forward under ``saved_tensors_hooks`` and adds up the distinct storages autograd saves; the
difference between 1 and 2 layers and between 256 and 512 tokens isolates bytes per token and layer; a
least-squares fit over the grid gives bytes per element of d, of the FFN width, of the query width, and per token.

    python tools/olmo_saved_bytes.py [--compiled] [--model dense_135m]

MoE models (eager only) need Triton's interpreter on the CPU (TRITON_INTERPRET=1) and take minutes; the results
are the table in tests/test_olmo_memory.py.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from tpsbench.models import ModelSpec, get_model
from tpsbench.stacks.olmo_core import interpreter_autotuners, olmo_config

DENSE_GRID = ((256, 512, 4), (512, 512, 4), (256, 1024, 4), (256, 512, 8))  # d, FFN width, heads of 64
# d, expert width, experts, top-k (4 heads of 64, no shared expert)
MOE_GRID = ((256, 512, 4, 2), (512, 512, 4, 2), (256, 1024, 4, 2), (256, 512, 8, 2), (256, 512, 4, 1), (256, 512, 8, 1))
HEAD_WIDTH = 64


def saved_bytes(model: torch.nn.Module, tokens: int, vocab: int, *, z_loss: bool = True) -> int:
    """Distinct storages (parameters excluded) autograd holds after one forward with the loss."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, tokens), generator=gen)
    labels = torch.randint(0, vocab, (1, tokens), generator=gen)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=labels, z_loss_multiplier=1e-4 if z_loss else None, return_logits=False)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def build(spec: ModelSpec, *, compiled: bool, reset: bool = True) -> torch.nn.Module:
    if reset:  # a fresh compile per shape (the recompile limit would fall back to eager)
        torch._dynamo.reset()
    torch.manual_seed(0)
    model = olmo_config(spec).build(init_device="cpu").to(torch.bfloat16)
    if compiled:
        model.apply_compile()
    return model


def per_token(spec: ModelSpec, *, compiled: bool, tokens: tuple[int, int] = (256, 512), reset: bool = True
              ) -> float:
    """Saved bytes per token of the whole model (blocks and loss); ``reset=False`` keeps the compiled code of
    earlier builds (the same block shapes compile once)."""
    model = build(spec, compiled=compiled, reset=reset)
    low, high = (saved_bytes(model, t, spec.vocab_size) for t in tokens)
    return (high - low) / (tokens[1] - tokens[0])


def per_token_and_layer(spec: ModelSpec, *, compiled: bool) -> float:
    one, two = (per_token(dataclasses.replace(spec, n_layers=n), compiled=compiled) for n in (1, 2))
    return two - one


def dense_variant(base: ModelSpec, d: int, ffn: int, heads: int, vocab: int = 512) -> ModelSpec:
    return dataclasses.replace(base, d_model=d, ffn_hidden=ffn, n_heads=heads, n_kv_heads=heads,
                               head_width=HEAD_WIDTH, vocab_size=vocab)


def moe_variant(base: ModelSpec, d: int, expert_hidden: int, experts: int, top_k: int,
                vocab: int = 512) -> ModelSpec:
    assert base.moe is not None
    moe = dataclasses.replace(base.moe, expert_hidden=expert_hidden, num_experts=experts, top_k=top_k,
                              shared_hidden=None)
    return dataclasses.replace(base, d_model=d, n_heads=4, n_kv_heads=4, head_width=HEAD_WIDTH, moe=moe,
                               vocab_size=vocab)


def fit_dense(base: ModelSpec, *, compiled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(bytes per d, per FFN element, per query element, per token) and the fit's residuals."""
    rows, saved = [], []
    for d, ffn, heads in DENSE_GRID:
        rows.append([d, ffn, heads * HEAD_WIDTH, 1.0])
        saved.append(per_token_and_layer(dense_variant(base, d, ffn, heads), compiled=compiled))
    a, y = np.array(rows, dtype=float), np.array(saved)
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    return coef, a @ coef - y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dense_135m")
    ap.add_argument("--compiled", action="store_true")
    args = ap.parse_args()
    base = get_model(args.model)
    if base.moe is not None:
        interpreter_autotuners()
        for d, hidden, experts, top_k in MOE_GRID:
            spec = moe_variant(base, d, hidden, experts, top_k)
            print(f"d {d}, expert width {hidden}, {experts} experts, top-{top_k}: "
                  f"{per_token_and_layer(spec, compiled=args.compiled):.0f} bytes per token and layer", flush=True)
        return
    coef, resid = fit_dense(base, compiled=args.compiled)
    print(f"{'compiled' if args.compiled else 'eager'} bytes per token and layer: {coef[0]:.2f} per d, "
          f"{coef[1]:.2f} per FFN element, {coef[2]:.2f} per query element, {coef[3]:.0f} per token "
          f"(largest residual {np.abs(resid).max():.1f} B)")
    vocab = (dataclasses.replace(base, n_layers=1, vocab_size=v) for v in (512, 1024))
    low, high = (per_token(s, compiled=args.compiled) for s in vocab)
    print(f"loss: {(high - low) / 512:.2f} bytes saved per logit after the forward")


if __name__ == "__main__":
    main()
