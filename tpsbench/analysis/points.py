"""Results documents flattened into comparable entries: one per measured point, with the numbers the
analyses need (measured, predicted, counters, idle time) under one name whatever the point's kind."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from tpsbench.analysis.verdict import Evidence
from tpsbench.costmodel import FWD_BWD, get_policy, global_step_bytes, step_ops, total_flops, train_workload
from tpsbench.models import UnknownNameError, get_model
from tpsbench.profiles import GPUProfile, gpu_label, load_profile
from tpsbench.results import RunDoc, load_results

# Points a cross-run comparison shows by default: whole training steps and whole layers forward+backward
# (stages and single directions stay in the files and in `--all-points`).
HEADLINE_MODES = ("train_step", "fwd_bwd")


class PointKey(NamedTuple):
    """What a point is, independent of where and when it ran."""

    model: str
    kind: str  # micro | e2e
    layer: str
    impl: str
    mode: str
    tokens: int
    global_tokens: int | None
    compiled: bool
    stack: str = "tpsbench"
    dist: str | None = None  # run --dist: "ep x2" (layout and ranks); tokens/s are per GPU
    # the router's mode (run --routing): a uniform or skewed run is another workload than a learned one (every
    # committed run is learned; a point without a router counts as learned)
    routing: str = "learned"


@dataclass(frozen=True, slots=True)
class Entry:
    source: str
    gpu: str  # profile name, or "cpu"
    gpu_name: str | None
    model: str
    kind: str  # micro | e2e
    layer: str  # attention, mlp, moe, a bracket, or "model" for e2e
    impl: str  # MoE implementation, a bracket, "dense", or "-" (attention, mlp)
    mode: str
    tokens: int
    global_tokens: int | None
    compiled: bool
    routing: str | None  # learned, uniform, "skewed S" (S: the Zipf exponent); None: no router
    policy: str
    status: str
    median_s: float | None = None
    iqr_rel: float | None = None  # IQR / median of the timed samples
    samples_s: tuple[float, ...] = ()
    tokens_per_s: float | None = None
    matmul_flops: float | None = None
    bytes: float | None = None
    predicted_s: float | None = None
    predicted_memory_share: float | None = None
    roofline_fraction: float | None = None
    dram_util: float | None = None  # GPM, fraction of peak
    dram_gbs: float | None = None
    throttled: bool = False
    idle_share: float | None = None
    error: str | None = None
    stack: str = "tpsbench"  # whose modules and training step ran
    dist: str | None = None  # run --dist: layout and ranks ("ep x2"); tokens/s per GPU

    @property
    def key(self) -> PointKey:
        return PointKey(self.model, self.kind, self.layer, self.impl, self.mode, self.tokens, self.global_tokens,
                        self.compiled, self.stack, self.dist, self.routing or "learned")

    @property
    def label(self) -> str:
        what = "train step" if self.kind == "e2e" else f"{self.layer} {self.mode}"
        impl = "" if self.impl in ("-", "dense") else f"/{self.impl}"
        comp = " compiled" if self.compiled else ""
        stack = "" if self.stack == "tpsbench" else f" [{self.stack}]"
        spread = "" if self.dist is None else f" ({self.dist}, per GPU)"
        route = "" if self.routing in (None, "learned") else f" [{self.routing} routing]"
        return f"{self.model} {what}{impl} @ {self.tokens:,}{comp}{stack}{spread}{route}"

    @property
    def predicted_tokens_per_s(self) -> float | None:
        if self.predicted_s is None:
            return None
        return (self.global_tokens or self.tokens) / self.predicted_s

    @property
    def is_headline(self) -> bool:
        return self.mode in HEADLINE_MODES

    def evidence(self) -> Evidence:
        """Utilisations against the datasheet ceilings of this entry's GPU profile (None on the CPU)."""
        profile = profile_named(self.gpu)
        model_bw = tensor = None
        if profile is not None and self.median_s:
            peak = profile.matmul_peak(get_policy(self.policy).matmul_math)
            if self.matmul_flops is not None:
                tensor = self.matmul_flops / self.median_s / (peak.value * 1e12)
            if self.bytes is not None:
                model_bw = self.bytes / self.median_s / (profile.mem_bandwidth_gbs.value * 1e9)
        return Evidence(idle_share=self.idle_share, dram_util=self.dram_util, model_bw_util=model_bw,
                        tensor_util=tensor, roofline_fraction=self.roofline_fraction,
                        predicted_memory_share=self.predicted_memory_share)


def slots_dict(obj: object) -> dict[str, object]:
    """A slotted dataclass as a dict of its fields (``dataclasses.asdict`` would recurse into nested ones)."""
    return {k: getattr(obj, k) for k in obj.__slots__}  # type: ignore[attr-defined]


@lru_cache(maxsize=64)
def profile_named(name: str) -> GPUProfile | None:
    """The profile of a run's GPU label; None for the CPU or a profile no longer known. A malformed profile is
    an error (ProfileError), as in every other command: its numbers would be missing without a word."""
    if name == "cpu":
        return None
    try:
        return load_profile(name)
    except UnknownNameError:
        return None


def _e2e_costs(model: str, seq_len: int, impl: str, tokens: int, global_tokens: int, policy: str
               ) -> tuple[float, float]:
    """Matmul FLOPs and bytes of one optimizer step, for result files written before they were stored."""
    spec = replace(get_model(model), seq_len=seq_len)
    cap = spec.moe.capacity_factor if spec.moe else None
    w = train_workload(spec, impl, tokens, get_policy(policy), cap)
    steps = global_tokens // tokens
    return steps * total_flops(step_ops(w), phases=FWD_BWD), global_step_bytes(w, steps)


def _routing(mode: str | None, skew: float | None) -> str | None:
    return f"skewed {skew:g}" if mode == "skewed" and skew is not None else mode


def entries_from_doc(doc: RunDoc, source: str = "") -> list[Entry]:
    cfg, machine = doc.config, doc.machine
    gpu = gpu_label(cfg.device, machine.profile)
    out = []
    for p in doc.points:
        is_e2e = p.kind == "e2e"
        impl = p.impl or "-"
        base = Entry(source=source, gpu=gpu, gpu_name=machine.gpu_name, model=cfg.model, kind=p.kind,
                     layer=p.layer, impl=impl, mode=p.mode, tokens=p.tokens,
                     global_tokens=(p.global_tokens or p.tokens) if is_e2e else None,
                     compiled=cfg.compile and is_e2e, routing=_routing(p.routing, cfg.skew), policy=cfg.dtype_policy,
                     status=p.status, error=p.error, stack=cfg.stack,
                     dist=None if cfg.dist is None else f"{cfg.dist} x{cfg.world_size}"
                     + ("" if cfg.ep_size is None else f", expert groups of {cfg.ep_size}")
                     + ("" if cfg.shard_size is None else f", shard groups of {cfg.shard_size}")
                     + ("" if cfg.fsdp_param_dtype in (None, "fp32") else f", {cfg.fsdp_param_dtype} gathers"))
        if p.status != "ok":
            out.append(base)
            continue
        assert p.stats is not None and p.derived is not None and p.raw is not None  # parse_results checks it
        stats, derived, pred, counters, raw = p.stats, p.derived, p.prediction, p.counters, p.raw
        values = counters.values if counters is not None else {}
        dram_pct = values.get("dram_bw_util_pct_mean")
        matmul_flops, nbytes = derived.matmul_flops, derived.bytes
        if is_e2e and (matmul_flops is None or nbytes is None):
            try:
                matmul_flops, nbytes = _e2e_costs(cfg.model, cfg.seq_len, impl, base.tokens,
                                                  base.global_tokens or base.tokens, base.policy)
            except ValueError:  # a model or implementation this version does not know: unknown, not guessed
                matmul_flops = nbytes = None
        median = stats.median
        out.append(replace(
            base, median_s=median, iqr_rel=stats.iqr / median if median else None, samples_s=tuple(raw.samples_s),
            tokens_per_s=derived.tokens_per_s, matmul_flops=matmul_flops, bytes=nbytes,
            predicted_s=None if pred is None else pred.predicted_s,
            predicted_memory_share=None if pred is None else pred.memory_bound_share,
            roofline_fraction=None if pred is None else pred.achieved_fraction,
            dram_util=dram_pct / 100 if dram_pct is not None else None, dram_gbs=values.get("dram_gbs"),
            throttled=counters is not None and counters.throttled,
            idle_share=None if raw.gpu_time is None else raw.gpu_time.idle_share,
        ))
    return out


def load_entries(paths: list[str | Path]) -> list[Entry]:
    """Entries of every results file, in the order given (raises ResultsError on a bad file)."""
    out: list[Entry] = []
    for path in paths:
        out += entries_from_doc(load_results(path), str(path))
    return out
