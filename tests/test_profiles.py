"""GPU profiles: the built-ins load, and malformed files are rejected naming the file and the key."""

import pytest

from tpsbench.errors import UnknownNameError
from tpsbench.profiles import ProfileError, gpu_names, load_all_profiles, load_profile, parse_profile

REQUIRED = ["h100_sxm", "h100_pcie", "h200", "b200", "a100_sxm", "rtx5090", "rtx4090", "l40s"]

GOOD = """
name = "test_gpu"
display_name = "Test GPU"
match = ["Test"]
bf16_tflops = { value = 100, source = "a" }
tf32_tflops = { value = 50, source = "a" }
fp32_tflops = { value = 10, source = "a" }
mem_bandwidth_gbs = { value = 1000, source = "a" }
l2_mb = { value = 40, source = "a" }
sm_count = { value = 100, source = "a" }
memory_gb = { value = 24, source = "a" }
"""


def test_required_profiles_exist_and_load():
    assert set(REQUIRED) <= set(gpu_names())
    for p in load_all_profiles():
        assert p.bf16_tflops.value > 0 and p.bf16_tflops.source
        assert p.mem_bandwidth_gbs.source


def test_ridge_points_from_cited_numbers():
    h100 = load_profile("h100_sxm")
    assert h100.ridge_flop_per_byte == pytest.approx(989.4e12 / 3350e9)  # 295 FLOP/B
    assert load_profile("rtx5090").ridge_flop_per_byte == pytest.approx(209.5e12 / 1792e9)
    assert load_profile("rtx5090").measured_copy_gbs is None  # unknown stays unknown


def test_aliases_resolve():
    assert load_profile("h100").name == "h100_sxm"
    assert load_profile("H200").name == "h200"


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(UnknownNameError, match="h100"):
        load_profile("h10")


def _write(tmp_path, text):
    path = tmp_path / "test_gpu.toml"
    path.write_text(text)
    return path


def test_good_profile_parses(tmp_path):
    p = parse_profile(_write(tmp_path, GOOD))
    assert p.ridge_flop_per_byte == pytest.approx(100.0)
    assert p.measured_matmul_tflops is None


@pytest.mark.parametrize(("edit", "key"), [
    (lambda t: t.replace('bf16_tflops = { value = 100, source = "a" }\n', ""), "bf16_tflops"),
    (lambda t: t.replace("bf16_tflops = { value = 100,", "bf16_tflops = { value = -3,"), "bf16_tflops.value"),
    (lambda t: t.replace('l2_mb = { value = 40, source = "a" }', "l2_mb = 40"), "l2_mb"),
    (lambda t: t.replace('sm_count = { value = 100, source = "a" }', 'sm_count = { value = 100, source = "" }'),
     "sm_count.source"),
    (lambda t: t + 'mystery = 1\n', "mystery"),
    (lambda t: t.replace('name = "test_gpu"', "name = 3"), "name"),
])
def test_malformed_profile_names_file_and_key(tmp_path, edit, key):
    path = _write(tmp_path, edit(GOOD))
    with pytest.raises(ProfileError) as info:
        parse_profile(path)
    assert str(path) in str(info.value)
    assert key in str(info.value)


def test_invalid_toml_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="not valid TOML"):
        parse_profile(_write(tmp_path, "name = \n"))


def test_user_profile_folder_shadows_builtins(tmp_path, monkeypatch):
    _write(tmp_path, GOOD)
    monkeypatch.setenv("TPSBENCH_PROFILES", str(tmp_path))
    assert "test_gpu" in gpu_names()
    assert load_profile("test_gpu").display_name == "Test GPU"


def test_a_gpu_is_found_by_the_name_nvidia_smi_prints(tmp_path, capsys):
    from tpsbench.cli import main

    assert load_profile("NVIDIA H100 80GB HBM3").name == "h100_sxm"
    assert load_profile("NVIDIA GeForce RTX 5090").name == "rtx5090"
    assert load_profile("NVIDIA H100 NVL").name == "h100_nvl"  # the longest match, not "H100"
    with pytest.raises(UnknownNameError):
        load_profile("NVIDIA Quadro X")
    assert main(["predict", "--gpu", "NVIDIA H100 80GB HBM3", "--model", "dense_tiny", "--json"]) == 0
    assert '"name": "h100_sxm"' in capsys.readouterr().out
    csv = tmp_path / "measured.csv"
    csv.write_text("model,gpu,tokens_per_s,tokens\ndense_135m,NVIDIA H100 80GB HBM3,700000,32768\n")
    assert main(["explain", "--measured", str(csv), "--json"]) == 0
    assert "h100_sxm" in capsys.readouterr().out


@pytest.mark.parametrize("profile", load_all_profiles(), ids=lambda p: p.name)
def test_no_profile_floor_can_be_beaten_by_its_own_cited_measurements(profile):
    """The roofline's ceilings are the highest credible figures: every measurement a profile cites runs at or
    below them, so a measured rate above the floor is an input error, never a model result."""
    from tpsbench.roofline import ceilings_for

    ceilings = ceilings_for(profile, "bf16")
    for cited in (profile.bf16_tflops, profile.measured_matmul_tflops, profile.measured_tensor_peak_tflops):
        if cited is not None:
            assert ceilings.matmul_flops >= cited.value * 1e12, cited
    for cited in (profile.mem_bandwidth_gbs, profile.measured_copy_gbs):
        if cited is not None:
            assert ceilings.bandwidth >= cited.value * 1e9, cited
    above = ceilings.matmul_flops > profile.bf16_tflops.value * 1e12
    assert ("measured" in ceilings.notes) == above  # the choice is shown


def test_the_rtx_cards_ceilings_are_their_measured_rates():
    from tpsbench.roofline import ceilings_for

    assert ceilings_for(load_profile("rtx5090"), "bf16").matmul_flops == 370.6e12  # mma issue rate
    assert ceilings_for(load_profile("rtx3090"), "bf16").matmul_flops == 76.6e12  # torch.matmul measured
    assert ceilings_for(load_profile("h100"), "bf16").matmul_flops == 989.4e12  # the datasheet stays
