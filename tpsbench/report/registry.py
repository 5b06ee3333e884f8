"""`tpsbench list`: the models (zoo and the user's), the GPU profiles and the MoE implementations, as tables."""

from __future__ import annotations

from tpsbench.impls import BRACKETS, moe_impls
from tpsbench.models import ModelSpec
from tpsbench.profiles import GPUProfile
from tpsbench.report.format import fmt
from tpsbench.report.tables import TableData

NUMBER_COLUMNS = {"d", "layers", "heads", "total params", "active", "active %"}


def models_table(models: list[ModelSpec]) -> TableData:
    columns = ["model", "OLMo-core", "d", "layers", "heads", "FFN / experts", "total params", "active",
               "active %", "from", "notes"]
    t = TableData("Models (parameter counts as OLMo-core counts them; from: the zoo or the user's file)", columns,
                  left=set(columns) - NUMBER_COLUMNS)
    for m in models:
        if m.moe is None:
            ffn = f"SwiGLU h {m.ffn_hidden}"
        else:
            e = m.moe
            shared = f", shared h {e.shared_hidden}" if e.shared_hidden else ""
            ffn = f"{e.num_experts} experts top-{e.top_k}, h {e.expert_hidden}{shared}"
        heads = str(m.n_heads) if m.is_mha else f"{m.n_heads} ({m.kv_heads} kv) x {m.head_dim}"
        t.add(m.name, m.olmo_name or "-", str(m.d_model), str(m.n_layers), heads, ffn, f"{m.total_params:,}",
              f"{m.active_params:,}", f"{100 * m.active_fraction:.1f}", m.origin, m.note)
    return t


def gpus_table(profiles: list[GPUProfile]) -> TableData:
    t = TableData("GPU profiles (dense datasheet peaks; ridge = bf16 FLOP/s / DRAM B/s; roofline bf16 = the floor's "
                  "ceiling, a cited measurement where one beats the datasheet, marked *)",
                  ["gpu", "device", "bf16 TFLOP/s", "roofline bf16", "fp32 TFLOP/s", "DRAM GB/s", "L2 MB", "SMs",
                   "ridge FLOP/B", "meas. matmul", "meas. copy GB/s", "meas. ridge"], left={"gpu", "device"})
    for p in profiles:
        mm, cp = p.measured_matmul_tflops, p.measured_copy_gbs
        ceiling = p.matmul_ceiling("bf16").value
        t.add(p.name, p.display_name, f"{p.bf16_tflops.value:g}",
              f"{ceiling:g}" + ("*" if ceiling > p.bf16_tflops.value else ""), f"{p.fp32_tflops.value:g}",
              f"{p.mem_bandwidth_gbs.value:g}", f"{p.l2_mb.value:g}", f"{p.sm_count.value:g}",
              f"{p.ridge_flop_per_byte:.0f}", fmt(mm.value if mm else None, "{:g}"),
              fmt(cp.value if cp else None, "{:g}"), fmt(p.measured_ridge_flop_per_byte, "{:.0f}"))
    return t


def impls_table() -> TableData:
    columns = ["impl", "aliases", "baseline", "needs GPU", "cost model", "what is counted"]
    t = TableData("MoE implementations (tpsbench.impls) and dense brackets", columns, left=set(columns))
    for i in moe_impls():
        counting = i.counting.value + (", capacity padding" if i.pads_to_capacity else "") + (
            ", launches per expert" if i.launches_per_expert else "")
        t.add(i.name, ", ".join(i.aliases) or "-", "yes" if i.baseline else "", "yes" if i.needs_gpu else "no",
              counting, i.description)
    for b in BRACKETS.values():
        t.add(b.name, "-", "", "no", "dense SwiGLU", b.description)
    return t
