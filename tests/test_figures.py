"""ganfn.figures: every figure is produced from a short run and opened as an image."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.figure import Figure
from PIL import Image

import ganfn
from ganfn import data, figures, models
from ganfn.loop import Evaluator, fit

torch.set_num_threads(1)
QUIET = dict(progress=False, print_fn=lambda s: None)


def _open(path):
    with Image.open(path) as im:
        im.load()
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] > 100 and arr.shape[1] > 100
    assert arr.std() > 5  # not a blank canvas
    return arr


def _digits_gan():
    G, D, latent = models.build("mlp", (1, 8, 8), hidden=16, depth=1, latent_dim=8)
    return ganfn.GAN(G, D, latent_dim=latent)


def _mean_ev():
    return Evaluator(lambda s: {"m": float(s.mean().abs())}, "m", n_samples=16)


def test_single_run_writes_losses_and_quality_figure(tmp_path):
    _, hist = fit(_digits_gan(), data.digits("train", 8), steps=6, batch_size=32, log_every=1, eval_every=3,
                  run_dir=tmp_path, checkpoint_every=None, evaluator=_mean_ev(), **QUIET)
    _open(tmp_path / "losses.png")
    assert not (tmp_path / "samples_members.png").exists()  # one member: no per-member grid


def test_stacked_sweep_writes_member_rows_and_heatmap(tmp_path):
    hps = [{"lr_d": a, "lr_g": b} for a in (1e-4, 1e-3) for b in (1e-4, 1e-3)]
    fit(_digits_gan(), data.digits("train", 8), steps=4, batch_size=32, log_every=1, eval_every=2,
        run_dir=tmp_path, checkpoint_every=None, evaluator=_mean_ev(), seeds=[0, 1, 2, 3], hparams=hps, **QUIET)
    for name in ("losses.png", "samples_members.png", "sweep_heatmap.png"):
        _open(tmp_path / name)
    # one row per member: the member grid is taller than wide only with many members; 4 rows of 8
    with Image.open(tmp_path / "samples_members.png") as im:
        assert im.height > 0.3 * im.width


def test_curves_draw_members_mean_and_band():
    fig = Figure()
    ax = fig.add_subplot()
    v = np.array([[1.0, 3.0], [2.0, np.nan], [3.0, 5.0]])
    figures.curves(ax, [0, 1, 2], v, "d_loss")
    assert len(ax.lines) == 3  # two members + the mean
    mean = ax.lines[-1].get_ydata()
    np.testing.assert_allclose(mean, [2.0, 2.0, 4.0])  # the NaN member is left out of the mean
    assert "mean of 2" in ax.lines[-1].get_label()
    assert len(ax.collections) == 1  # the ±std band


@given(st.integers(1, 5), st.integers(1, 5), st.booleans())
def test_heatmap_any_grid(tmp_path_factory, r, c, higher):
    v = np.arange(r * c, dtype=float).reshape(r, c)
    v[0, 0] = math.nan
    p = figures.heatmap(v, list(range(r)), [f"c{j}" for j in range(c)], tmp_path_factory.mktemp("h") / "h.png",
                        row_name="rows", col_name="cols", value_name="FID (n = 10)", higher_is_better=higher)
    _open(p)


def test_heatmap_rejects_mismatched_labels(tmp_path):
    with pytest.raises(ValueError, match=r"\[R, C\] = \[2, 3\]"):
        figures.heatmap(np.zeros((3, 2)), [0, 1], [0, 1, 2], tmp_path / "h.png", row_name="a", col_name="b",
                        value_name="v")


def test_sweep_heatmap_averages_seeds_and_needs_two_keys(tmp_path):
    hps = [{"a": 1, "b": 1}, {"a": 1, "b": 1}, {"a": 2, "b": 1}]
    _open(figures.sweep_heatmap(hps, [1.0, 3.0, math.nan], tmp_path / "s.png", value_name="v", keys=("a", "b")))
    with pytest.raises(ValueError, match="exactly 2 varying"):
        figures.sweep_heatmap([{"a": 1}, {"a": 2}], [1.0, 2.0], tmp_path / "t.png", value_name="v")
    with pytest.raises(ValueError, match="2 hyperparameter dicts but 1"):
        figures.sweep_heatmap([{"a": 1}, {"a": 2}], [1.0], tmp_path / "t.png", value_name="v")


def test_member_rows_checks_inputs(tmp_path):
    x = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    _open(figures.member_rows(list(x), tmp_path / "m.png", labels=["a", "b"]))
    with pytest.raises(ValueError, match="2 members but 1 labels"):
        figures.member_rows(list(x), tmp_path / "m.png", labels=["a"])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        figures.member_rows([torch.zeros(4, 2)], tmp_path / "m.png")
