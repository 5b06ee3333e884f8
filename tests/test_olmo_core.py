"""tpsbench's counts held to the users' own code, OLMo-core 3 (the optional extra ``.[olmo]``): every zoo model
built in OLMo-core from its dimensions has the same total and active parameters, and the ``olmo`` FLOP
convention equals OLMo-core's ``Transformer.num_flops_per_token`` to the FLOP; the zoo entries that name an
upstream factory equal it. Skipped, with the install line, where the extra is missing."""

from __future__ import annotations

import re
import warnings

import pytest
from guard import HANG_GUARD_S

from tpsbench.costmodel import Workload, flops_per_token
from tpsbench.models import get_model, zoo_models
from tpsbench.stacks.olmo_core import (
    OLMO_CORE_INSTALL,
    StackError,
    cannot_express,
    factory_config,
    num_flops_per_token,
    olmo_config,
    require_olmo_core,
)

try:
    require_olmo_core()
    HAVE_OLMO_CORE = True
except StackError:
    HAVE_OLMO_CORE = False
needs_olmo_core = pytest.mark.skipif(not HAVE_OLMO_CORE, reason=f"ai2-olmo-core not installed: {OLMO_CORE_INSTALL}")
ZOO_MODELS = zoo_models()
ZOO = sorted(n for n, spec in ZOO_MODELS.items() if cannot_express(spec) is None)  # every zoo entry
OLMO_ENTRIES = sorted(n for n, spec in ZOO_MODELS.items() if spec.olmo_name)  # the zoo's OLMo-core models


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():  # OLMo-core warns that grouped_gemm (a GPU package) is missing
        warnings.simplefilter("ignore", UserWarning)
        yield


@needs_olmo_core
@pytest.mark.parametrize("name", ZOO)
def test_parameter_counts_equal_olmo_cores(name):
    spec = get_model(name)
    config = olmo_config(spec)
    assert config.num_params == spec.total_params
    assert config.num_active_params == spec.active_params


@needs_olmo_core
@pytest.mark.parametrize("name", ZOO)
def test_olmo_flop_convention_equals_num_flops_per_token(name):
    spec = get_model(name)
    for seq in sorted({spec.seq_len, 2048, 257}):  # the model's, the users', and an odd one (integer division)
        w = Workload(model=spec, tokens=seq, seq_len=seq)
        assert flops_per_token(w, "olmo") == num_flops_per_token(olmo_config(spec), seq), seq


@needs_olmo_core
@pytest.mark.parametrize("name", [n for n in ZOO if ZOO_MODELS[n].olmo_factory])
def test_zoo_entries_equal_their_upstream_factory(name):
    spec = get_model(name)
    ours, upstream = olmo_config(spec), factory_config(spec)
    assert (upstream.num_params, upstream.num_active_params) == (ours.num_params, ours.num_active_params)
    assert upstream.d_model == spec.d_model and upstream.n_layers == spec.n_layers
    assert num_flops_per_token(upstream, 2048) == num_flops_per_token(ours, 2048)


def test_every_entry_says_which_factory_or_why_none():
    for spec in ZOO_MODELS.values():
        assert bool(spec.olmo_factory) != bool(spec.olmo_factory_note), spec.name


def test_without_the_extra_the_error_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_olmo(name, *args, **kwargs):
        if name == "olmo_core" or name.startswith("olmo_core."):
            raise ImportError("No module named 'olmo_core'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_olmo)
    with pytest.raises(StackError, match=r'pip install -e "\.\[olmo\]"'):
        olmo_config(get_model("moe_tiny"))


@needs_olmo_core
@pytest.mark.slow
def test_tpsbench_modules_compute_olmo_cores_model_and_its_flops():
    """Loaded with OLMo-core's weights, tpsbench's dense, capacity and dropless models give OLMo-core's logits and
    gradients (fp32, the same assignments dropped); and the cost model's exact FLOPs equal FlopCounterMode on
    OLMo-core's model of every zoo entry (MoE entries: one block, some narrowed), forward and backward, to the
    FLOP (tests/olmo_check.py)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    script = os.path.join(os.path.dirname(__file__), "olmo_check.py")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip().endswith("ALL OK")
    checked = set()  # (zoo entry, MoE type) pairs whose FLOPs were found equal
    for line in out.stdout.splitlines():
        if line.endswith("FLOPs: equal"):
            name = re.split(r"[\[/]", line.split()[0])[0]  # "moe_1b/4" and "moe_1b[1L]" are moe_1b
            checked.add((name, line.split()[1] if ZOO_MODELS[name].moe else "dense"))
    for name in OLMO_ENTRIES:
        spec = ZOO_MODELS[name]
        types = {"dense"} if spec.moe is None else {"grouped", "capacity"} if spec.moe.capacity_factor else {"grouped"}
        assert {(name, t) for t in types} <= checked, name
    same = {re.match(r"\('(\w+)', \d+, '(\w+)'\)", line).groups() for line in out.stdout.splitlines()
            if line.endswith(": same")}
    for name in OLMO_ENTRIES:  # every OLMo-core entry's modules held to OLMo-core's, in each MoE type it has
        spec = ZOO_MODELS[name]
        types = {"grouped", "capacity"} if spec.moe and spec.moe.capacity_factor else {"grouped"}
        assert {(name, t) for t in types} <= same, name


@needs_olmo_core
@pytest.mark.slow
def test_run_the_olmo_core_stack_on_the_cpu_and_compare_it_with_tpsbench(tmp_path, capsys):
    """OLMo-core's own training step (its loss with z-loss, gradient clipping, AdamW) of a dense and an MoE tiny
    model: points that compare puts next to tpsbench's. The MoE runs OLMo-core's Triton kernels, so in Triton's
    interpreter, in a subprocess (TRITON_INTERPRET must be set before triton is imported)."""
    import json
    import os
    import subprocess
    import sys

    from tpsbench.cli import main
    from tpsbench.results import load_results

    moe = tmp_path / "olmo-moe.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the command as a user types it
    out = subprocess.run([sys.executable, "-m", "tpsbench", "run", "--device", "cpu", "--stack", "olmo-core",
                          "--model", "moe_tiny", "--mode", "e2e", "--impl", "capacity", "--reps", "1", "--batch",
                          "64", "--out", str(moe)],  # one 64-token sequence: 12 s in the interpreter, 256 took 30
                         capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (point,) = load_results(moe).points
    assert point.status == "ok" and point.raw is not None and point.raw.recipe is not None
    assert point.raw.recipe["moe_type"] == "default" and "z-loss" in point.raw.recipe["loss"]
    assert point.raw.recipe["triton_kernels"] == "interpreter (TRITON_INTERPRET=1)"  # switched on by tpsbench
    assert point.raw.recipe["expert_gemms"] == "none"  # capacity: torch.bmm, no grouped GEMM
    assert point.raw.tokens_per_expert_max_over_mean is not None  # OLMo-core's router's histogram
    olmo, ours = tmp_path / "olmo-dense.json", tmp_path / "tpsbench-dense.json"
    assert main(["run", "--device", "cpu", "--stack", "olmo-core", "--model", "dense_tiny", "--mode", "e2e",
                 "--reps", "2", "--out", str(olmo)]) == 0
    assert main(["run", "--device", "cpu", "--model", "dense_tiny", "--mode", "e2e", "--reps", "2",
                 "--out", str(ours)]) == 0
    assert load_results(olmo).config.stack == "olmo-core"
    capsys.readouterr()
    assert main(["compare", str(ours), str(olmo), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["stacks"]
    assert row["stack"] == "olmo-core"
    assert row["ratio"] == pytest.approx(row["tokens_per_s"] / row["stack_tokens_per_s"])


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "moe_tiny", "--impl", "dense_active"], "olmo-core has no MoE implementation 'dense_active'"),
    (["--model", "moe_tiny", "--impl", "triton"], "olmo-core has no MoE implementation 'triton'"),
    (["--model", "dense_tiny", "--dtype", "fp32"], "runs its own precision"),
])
def test_run_with_the_olmo_core_stack_refuses_bad_input_in_one_line(args, needle, capsys, tmp_path):
    from tpsbench.cli import main

    if not HAVE_OLMO_CORE:
        needle = OLMO_CORE_INSTALL  # without the extra, every one of them says how to install it
    code = main(["run", "--device", "cpu", "--stack", "olmo-core", *args, "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@needs_olmo_core
def test_an_olmo_core_moe_on_the_cpu_needs_the_interpreter_before_triton_is_imported(capsys, monkeypatch, tmp_path):
    """Without TRITON_INTERPRET=1 a fresh process switches it on (the run test above); once Triton is imported in
    the process (here: this test process, as in a library user's) that is too late: one line says what to do."""
    import sys
    import types

    from tpsbench.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setitem(sys.modules, "triton", sys.modules.get("triton") or types.ModuleType("triton"))
    code = main(["run", "--device", "cpu", "--stack", "olmo-core", "--model", "moe_tiny", "--out",
                 str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "TRITON_INTERPRET=1" in err and len(err.splitlines()) == 1


@needs_olmo_core
@pytest.mark.slow
def test_olmo_cores_layers_are_micro_points(tmp_path, capsys):
    """OLMo-core's attention, feed-forward and dropless MoE timed as layers, next to tpsbench's in compare."""
    import json
    import os
    import subprocess
    import sys

    from tpsbench.cli import main
    from tpsbench.results import load_results

    moe = tmp_path / "olmo-moe-layer.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-m", "tpsbench", "run", "--device", "cpu", "--stack", "olmo-core",
                          "--model", "moe_tiny", "--mode", "micro", "--layers", "moe", "--impl", "dropless", "--reps",
                          "1", "--batch", "64", "--out", str(moe)],
                         capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    points = load_results(moe).points
    assert [(p.layer, p.impl, p.mode, p.status) for p in points] == [
        ("moe", "dropless", m, "ok") for m in ("fwd", "bwd", "fwd_bwd")]
    assert points[2].raw is not None and points[2].raw.tokens_per_expert_max_over_mean is not None
    olmo, ours = tmp_path / "olmo-dense.json", tmp_path / "tpsbench-dense.json"
    for stack, path in (("olmo-core", olmo), ("tpsbench", ours)):
        assert main(["run", "--device", "cpu", "--stack", stack, "--model", "dense_tiny", "--mode", "micro",
                     "--reps", "2", "--out", str(path)]) == 0
    capsys.readouterr()
    assert main(["compare", str(ours), str(olmo), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["stacks"]
    assert {r["label"] for r in rows} == {"dense_tiny attention fwd_bwd @ 256", "dense_tiny mlp fwd_bwd @ 256"}


def test_a_model_olmo_core_cannot_express_is_refused_in_one_line(capsys, monkeypatch, tmp_path):
    """Every zoo entry can be expressed (Qwen3's grouped-query attention and head-wise qk-norm too); a model
    OLMo-core's config cannot hold (its rope_theta is an int) is refused by predict and run --stack olmo-core in
    one line instead of being measured as a different model."""
    import dataclasses

    import tpsbench.bench.config
    import tpsbench.cli.predict
    from tpsbench.cli import main
    from tpsbench.stacks.olmo_core import cannot_express

    assert all(cannot_express(spec) is None for spec in ZOO_MODELS.values())
    odd = dataclasses.replace(get_model("dense_tiny"), name="dense_tiny_theta", rope_theta=10_000.5)
    for module in (tpsbench.cli.predict, tpsbench.bench.config):
        monkeypatch.setattr(module, "get_model", lambda name: odd)
    commands = [["predict", "--gpu", "h100", "--model", "dense_tiny", "--stack", "olmo-core"]]
    if HAVE_OLMO_CORE:  # without the extra run says how to install it first (tested above)
        commands.append(["run", "--device", "cpu", "--stack", "olmo-core", "--model", "dense_tiny", "--out",
                         str(tmp_path / "r.json")])
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "OLMo-core cannot express dense_tiny_theta" in err and len(err.splitlines()) == 1, argv
    assert not (tmp_path / "r.json").exists()


def test_the_recipe_says_which_expert_gemms_olmo_cores_dropless_moe_runs(monkeypatch):
    """Without the grouped_gemm package OLMo-core's dropless MoE loops over experts after a host copy of the
    batch sizes (a GPU->CPU sync per layer): a measured step includes it, so its recipe says so."""
    import importlib.util

    from tpsbench.stacks.olmo_core import dropless_expert_gemms

    real = importlib.util.find_spec
    for found, expected in ((None, "per-expert loop"), (object(), "grouped_gemm.gmm")):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, found=found: found if name == "grouped_gemm" else real(name, *a))
        assert dropless_expert_gemms().startswith(expected)
