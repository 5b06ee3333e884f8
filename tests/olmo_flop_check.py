"""The cost model's exact matmul FLOPs against FlopCounterMode on OLMo-core's own modules (a forward and a
backward of the model with a cross-entropy loss), for a dense model and OLMo-core's capacity (MoEType.default)
and dropless MoE. Run by tests/test_olmo_core.py in a subprocess: OLMo-core's MoE calls Triton gather/scatter
kernels, which run on the CPU only in Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported),
and its autotuner cannot benchmark there (no driver): each autotuned kernel is given its first config, here
only, never on a GPU. Prints one line per case and "ALL OK"."""

from __future__ import annotations

import dataclasses
import sys
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tpsbench.costmodel import FWD_BWD, Phase, Workload, step_ops, total_flops
from tpsbench.models import get_model
from tpsbench.stacks.olmo_core import olmo_config

# (model, layers, cost-model implementation): OLMo-core's MoEType.default drops tokens past the capacity
# (tpsbench's "capacity"), MoEType.dropless computes every assignment (counted as "grouped")
CASES = [("dense_tiny", 2, "grouped"), ("dense_135m", 1, "grouped"), ("moe_tiny", 2, "capacity"),
         ("moe_tiny", 2, "grouped")]


def single_config_autotuners() -> None:
    import olmo_core.kernels.moe as kernels
    import triton

    for name in dir(kernels):
        k = getattr(kernels, name)
        if isinstance(k, triton.runtime.autotuner.Autotuner):
            k.configs = k.configs[:1]


def check(name: str, layers: int, impl: str) -> tuple[float, float]:
    spec = get_model(name).with_layers(layers)
    if spec.moe is not None and impl == "grouped":  # the dropless variant of the same model
        spec = dataclasses.replace(spec, moe=dataclasses.replace(spec.moe, capacity_factor=None))
    torch.manual_seed(0)
    model = olmo_config(spec).build(init_device="cpu")
    seq = min(256, spec.seq_len)
    ids = torch.randint(0, spec.vocab_size, (2, seq))
    with sdpa_kernel([SDPBackend.MATH]):  # FlopCounterMode has no formula for the CPU flash kernel
        with FlopCounterMode(display=False) as fwd:
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), ids.flatten())
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    ops = step_ops(Workload(model=spec, tokens=2 * seq, seq_len=seq, attention_backend="math", impl=impl))
    measured_fwd = fwd.get_total_flops()
    measured_all = measured_fwd + bwd.get_total_flops()
    assert measured_fwd == total_flops(ops, phases=[Phase.FWD]), (name, impl, measured_fwd)
    assert measured_all == total_flops(ops, phases=FWD_BWD), (name, impl, measured_all)
    return measured_fwd, measured_all


def main() -> None:
    warnings.simplefilter("ignore")  # OLMo-core warns that grouped_gemm and transformer_engine are missing
    single_config_autotuners()
    for case in CASES:
        fwd, total = check(*case)
        print(case, f"fwd {fwd:.0f} fwd+bwd {total:.0f} FLOPs: equal", flush=True)
    print("ALL OK")


if __name__ == "__main__":
    sys.exit(main())
