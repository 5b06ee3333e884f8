"""OLMo-core's memory as counted (tpsbench/estimate/olmo_memory.py) against OLMo-core itself, and the users'
configurations that ran on 32 GB RTX 5090s."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from tpsbench.costmodel import Workload, get_policy
from tpsbench.estimate import olmo_memory
from tpsbench.estimate.memory import step_memory, usable_bytes
from tpsbench.models import get_model
from tpsbench.profiles import load_profile

pytest.importorskip("olmo_core")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import olmo_saved_bytes as probe


def test_the_dense_eager_constants_are_what_olmo_core_saves():
    coef, resid = probe.fit_dense(get_model("dense_135m"), compiled=False)
    expected = olmo_memory.OLMO_DENSE_EAGER
    assert coef == pytest.approx([expected.per_d, expected.per_h, expected.per_q, expected.per_token], abs=0.01)
    assert abs(resid).max() < 1.0


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="torch.compile needs Inductor")
def test_a_compiled_block_and_loss_save_what_the_compiled_constants_say():
    """Three compiled builds (1 and 2 layers; a second vocabulary): the block's bytes per token, and the loss's 2
    bytes per logit (Inductor saves only the bf16 logits)."""
    spec = dataclasses.replace(probe.dense_variant(get_model("dense_135m"), 256, 512, 4), n_layers=1)
    one = probe.per_token(spec, compiled=True)
    block = probe.per_token(dataclasses.replace(spec, n_layers=2), compiled=True, reset=False) - one
    c = olmo_memory.OLMO_DENSE_COMPILED
    assert block == pytest.approx(c.per_d * 256 + c.per_h * 512 + c.per_q * 256 + c.per_token, abs=1.0)
    per_logit = (probe.per_token(dataclasses.replace(spec, vocab_size=1024), compiled=True, reset=False) - one) / 512
    assert per_logit == pytest.approx(olmo_memory.LOSS_COMPILED_BYTES, abs=0.01)


def test_the_eager_loss_saves_fp32_logits_and_its_peak_counts_them():
    base = dataclasses.replace(probe.dense_variant(get_model("dense_135m"), 256, 512, 4), n_layers=1)
    low, high = (probe.per_token(dataclasses.replace(base, vocab_size=v), compiled=False) for v in (512, 1024))
    assert (high - low) / 512 == pytest.approx(8.0, abs=0.01)  # log_softmax's fp32 output and the fp32 logits
    peak = olmo_memory.loss_peak_bytes(1, dataclasses.replace(base, vocab_size=1), compiled=False)
    assert peak == olmo_memory.LOSS_EAGER_BYTES + olmo_memory.LOSS_EAGER_Z_LOSS_BYTES


@pytest.mark.parametrize("model", ["dense_135m", "moe_1b"])
def test_the_users_32k_compiled_olmo_core_runs_fit_a_32_gb_rtx5090(model):
    w = Workload(model=get_model(model), tokens=32768, seq_len=2048, policy=get_policy("olmo_core"))
    mem = step_memory(w, compiled=True, overhead_fraction=0.05)
    assert mem.fits(usable_bytes(load_profile("rtx5090").memory_gb.value))
    eager = step_memory(w, compiled=False, overhead_fraction=0.05)
    assert eager.loss_transient_bytes == pytest.approx(11 * mem.loss_transient_bytes)  # 22 against 2 bytes a logit


def test_qk_norm_costs_what_olmo_core_saves_for_it():
    spec = dataclasses.replace(probe.dense_variant(get_model("dense_135m"), 256, 512, 4), qk_norm=True)
    measured = probe.per_token_and_layer(spec, compiled=False)
    c = olmo_memory.OLMO_DENSE_EAGER
    counted = c.per_d * 256 + c.per_h * 512 + c.per_q * 256 + c.per_token + olmo_memory.QK_NORM_EAGER * 512
    counted += olmo_memory.QK_NORM_PER_TOKEN
    assert measured == pytest.approx(counted, abs=1.0)


# TRITON_INTERPRET=1 python tools/olmo_saved_bytes.py --model moe_1b (OLMo-core 3.0, eager, 2026-12-03): bytes
# per token and layer of capacity-MoE blocks with qk-norm and the reordered norm.
MEASURED_MOE = [((256, 512, 4, 2), 24548), ((512, 512, 4, 2), 32612), ((256, 1024, 4, 2), 34276),
                ((256, 512, 8, 2), 25220), ((256, 512, 4, 1), 18772), ((256, 512, 8, 1), 18804)]


@pytest.mark.parametrize(("shape", "measured"), MEASURED_MOE)
def test_moe_blocks_are_counted_within_half_a_percent_of_what_olmo_core_saved(shape, measured):
    spec = dataclasses.replace(probe.moe_variant(get_model("moe_1b"), *shape), n_layers=1)
    low, high = (Workload(model=spec, tokens=t, seq_len=t, impl="capacity", policy=get_policy("olmo_core"))
                 for t in (256, 512))
    counted = (olmo_memory.saved_per_token(high, compiled=False) * 512
               - olmo_memory.saved_per_token(low, compiled=False) * 256) / 256
    assert counted == pytest.approx(measured, rel=0.005)


def test_a_measured_row_the_memory_model_says_cannot_fit_says_the_model_overestimates(tmp_path, capsys):
    """moe_1b at 32,768-token microbatches on a 32 GB RTX 5090 with OLMo-core: compiled (what the users ran), the
    memory model counts what OLMo-core keeps and the step fits; eager, it puts the step above the card's memory, so
    a row that says it ran there makes the model what is wrong."""
    from tpsbench.cli import main

    csv = tmp_path / "measured.csv"
    csv.write_text("model,gpu,tokens_per_s,microbatch,stack,compile\n"
                   "moe_1b,NVIDIA GeForce RTX 5090,52000,32768,olmo-core,true\n")
    assert main(["explain", "--measured", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "does not fit" not in out and "overestimates" not in out
    csv.write_text("model,gpu,tokens_per_s,microbatch,stack,compile\n"
                   "moe_1b,NVIDIA GeForce RTX 5090,52000,32768,olmo-core,false\n")
    assert main(["explain", "--measured", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "does not fit" not in out and "ran; model overestimates" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("model,gpu,tokens_per_s,compile\nmoe_1b,h100,52000,maybe\n")
    assert main(["explain", "--measured", str(bad)]) == 2
    assert "compile 'maybe': write true or false" in capsys.readouterr().err
    both = tmp_path / "both.csv"
    both.write_text("model,gpu,tokens_per_s,tokens,microbatch\nmoe_1b,h100,52000,32768,16384\n")
    assert main(["explain", "--measured", str(both)]) == 2
    assert "tokens 32768 and microbatch 16384 differ" in capsys.readouterr().err
