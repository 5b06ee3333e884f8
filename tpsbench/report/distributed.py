"""`predict --gpus N --dist`: each collective of one GPU's step per phase with its bytes and its floor, then the
step (floor and expected, communication overlapped or not) and one GPU's memory."""

from __future__ import annotations

from tpsbench.estimate.distributed import DistPrediction
from tpsbench.report.tables import TableData


def dist_lines(d: DistPrediction) -> list[TableData | str]:
    """What `predict` prints: each collective per phase with its bytes and bound (a table), then the step."""
    groups = "" if d.ep_size is None else f" in expert-parallel groups of {d.ep_size}"
    groups += "" if d.shard_size is None else f", hybrid sharding over groups of {d.shard_size}"
    groups += f", {d.policy}"
    over = "; ".join(f"{link.name} at {link.gbs:g} GB/s one way ({link.source})" for link in d.links)
    head = (f"{d.world} GPUs, --dist {d.mode}{groups}, {d.tokens_per_rank:,} tokens per GPU per step: communication "
            f"over {over}")
    table = TableData(f"Collectives of one GPU's step ({d.world} GPUs, --dist {d.mode})",
                      ["phase", "collective", "op", "count", "MB per GPU", "ms (floor)", "link"],
                      left={"phase", "collective", "op", "link"})
    for c in d.comm:
        table.add(c.op.phase.value, c.op.collective, c.op.name, str(c.op.count), f"{c.op.bytes_per_rank / 1e6:,.1f}",
                  f"{c.seconds * 1e3:.2f}", f"{c.link.name} ({c.op.group})")
    rows: list[TableData | str] = [head, table]
    syncs = sum(c.op.host_syncs for c in d.comm)
    rows.append(f"  communication {d.comm_s * 1e3:.2f} ms per step at the link rate; {syncs} host syncs (split sizes)")
    for basis in ("floor", "expected"):
        parts = []
        for overlap in ("none", "full"):
            s, tps, eff = (d.step_s(basis, overlap), d.tokens_per_s_per_gpu(basis, overlap),
                           d.scaling_efficiency(basis, overlap))
            if s is None or tps is None or eff is None:  # no efficiency table for the expected estimate
                parts.append(f"overlap {overlap}: n/a (no efficiency table)")
                continue
            parts.append(f"overlap {overlap}: {s * 1e3:.1f} ms, {tps:,.0f} tokens/s per GPU, "
                         f"{tps * d.world:,.0f} in total, scaling efficiency {100 * eff:.0f}%")
        note = "" if basis == "floor" else (f" (compute: the one-GPU expected step{', compiled' if d.compiled else ''};"
                                            " communication at the link rate)")
        rows.append(f"  {basis}{note}: " + "; ".join(parts))
    mem = d.memory
    verdict = "fits" if mem.fits(d.usable_bytes) else "does not fit"
    rows.append(f"  memory per GPU: peak {mem.peak_bytes / 1e9:,.1f} GB allocated (parameters and AdamW state "
                f"{mem.parameters_and_state_bytes / 1e9:,.1f}, weight copies and gathered units "
                f"{mem.weight_copies_bytes / 1e9:,.1f}, activations {mem.activations_bytes / 1e9:,.1f}, loss "
                f"{mem.loss_transient_bytes / 1e9:,.1f}) + allocator reserve {mem.overhead_bytes / 1e9:,.1f} GB on "
                f"{d.usable_bytes / 1e9:,.1f} GB usable: {verdict}")
    rows.append("  predicted only: the GPU machines tpsbench has measured on hold one GPU each")
    return rows
