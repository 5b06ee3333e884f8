"""Where a fit's points start: without --skip-tokens, at the end of the learning-rate warm-up a loss file logs
(long ``lr`` column, or W&B's ``<run> - optim/LR (group 0)`` as OLMo-core logs it), else after the first 10% of
tokens; `scaling fit` says which."""

from __future__ import annotations

import csv

import numpy as np

from tpsbench.analysis.losses import read_losses
from tpsbench.analysis.worth_inputs import model_curve
from tpsbench.cli import main
from tpsbench.models import get_model
from tpsbench.scaling.forms import CHINCHILLA
from tpsbench.scaling.runs import default_skip, run_points
from tpsbench.scaling.synthetic import SyntheticSize, synthetic_curves

WARMUP = 0.03  # of each run's steps


def _lr(steps: int) -> np.ndarray:
    warm = int(steps * WARMUP)
    up = np.linspace(3e-4 / warm, 3e-4, warm)
    down = 3e-4 * (0.55 + 0.45 * np.cos(np.linspace(0, np.pi, steps - warm)))
    return np.concatenate([up, down])


def _long_csv(path, with_lr: bool) -> None:
    sizes = [SyntheticSize(m, float(get_model(m).total_params), 200, tpp) for m, tpp in
             (("dense_60m", 40.0), ("dense_135m", 30.0), ("dense_271m", 20.0))]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "loss", "tokens", *(["lr"] if with_lr else [])])
        for c in synthetic_curves(sizes, seed=5):
            assert c.tokens is not None
            for step, loss, tok, lr in zip(c.steps, c.losses, c.tokens, _lr(len(c.steps)), strict=True):
                w.writerow([c.name, step, loss, tok, *([lr] if with_lr else [])])


def test_the_fit_starts_where_the_logged_warm_up_ends(tmp_path):
    path = tmp_path / "curves.csv"
    _long_csv(path, with_lr=True)
    runs = read_losses(path)
    assert all(r.lr is not None and len(r.lr) == len(r) for r in runs)
    for r in runs:
        curve = model_curve(r.name, [r], 1)
        end = int(200 * WARMUP) - 1  # the last warm-up step: the rate's peak
        assert default_skip(curve) == curve.tokens[end] < 0.1 * curve.tokens[-1]
        [points] = run_points(CHINCHILLA, [curve])
        assert points.tokens[0] == curve.tokens[end + 1]


def test_scaling_fit_says_how_the_warm_up_was_left_out(tmp_path, capsys):
    for with_lr, said in ((True, "through the end of the logged learning-rate warm-up (3 runs)"),
                          (False, "the first 10% of tokens (3 runs without a learning-rate column)")):
        path = tmp_path / f"curves-{with_lr}.csv"
        _long_csv(path, with_lr)
        assert main(["scaling", "fit", "--losses", str(path), "--resamples", "3", "-o", str(tmp_path / "l.toml")]) == 0
        assert f"warm-up left out: {said}" in capsys.readouterr().out


def test_a_wandb_export_keeps_olmo_cores_learning_rate_column(tmp_path):
    path = tmp_path / "wandb.csv"
    path.write_text("Step,a - train/CE loss,a - optim/LR (group 0),b - train/CE loss\n"
                    "1,9.0,1e-5,9.1\n2,8.0,2e-5,8.2\n3,7.5,2e-5,7.6\n")
    runs = {r.name: r for r in read_losses(path)}
    assert runs["a"].lr == (1e-5, 2e-5, 2e-5) and runs["b"].lr is None
