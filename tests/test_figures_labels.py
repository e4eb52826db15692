"""Figures a person reads: a conditional sample grid has each row labelled with
its class, and a quality figure spanning orders of magnitude (a Fréchet
distance from 21 at step 0 down to 0.2) is drawn on a log axis."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import figures, models
from ganfn.loop import fit

torch.set_num_threads(1)


def _history(values, key="FD-LeNet"):
    """A fit history whose figure ``key`` takes ``values`` at steps 0, 100, ...
    (each a float, or a list of floats for a stacked run)."""
    recs = [{"step": 100 * i, "figures": [{key: x} for x in (v if isinstance(v, list) else [v])]}
            for i, v in enumerate(values)]
    return {"train": [{"step": 1, "d_loss": 1.0, "g_loss": 1.0}], "initial": recs[0], "eval": recs[1:]}


def _quality_axis(fig):
    return fig.axes[1]


def test_fd_from_21_to_a_fifth_is_on_a_log_axis():
    fig = figures.training_plot(_history([21.0, 1.2, 0.4, 0.2]), primary="FD-LeNet", n_samples=1000)
    ax = _quality_axis(fig)
    assert ax.get_yscale() == "log" and "log scale" in ax.get_ylabel()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=6), st.integers(1, 3))
def test_log_axis_exactly_when_positive_values_span_a_factor_of_ten(values, members):
    per_step = [[v * (1 + 0.01 * m) for m in range(members)] if members > 1 else v for v in values]
    fig = figures.training_plot(_history(per_step), primary="FD-LeNet")
    flat = [x for v in per_step for x in (v if isinstance(v, list) else [v])]
    want = max(flat) >= 10 * min(flat)
    assert (_quality_axis(fig).get_yscale() == "log") == want


@pytest.mark.parametrize("values", [[0.0, 2.0, 8.0], [-0.01, 0.5, 3.0], [math.nan, 1.0, 1.5]],
                         ids=["modes-from-0", "negative-kid", "narrow"])
def test_linear_axis_for_zero_negative_or_narrow_figures(values):
    fig = figures.training_plot(_history(values, "modes"), primary="modes")
    assert _quality_axis(fig).get_yscale() == "linear"


def _tick_labels(fig):
    return [t.get_text() for t in fig.axes[0].get_yticklabels()]


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from([1, 3]))
def test_every_row_of_a_conditional_grid_is_labelled_with_its_class(k, n, channels):
    x = torch.rand(k * n, channels, 6, 6) * 2 - 1
    fig = figures.class_rows_plot(x, k)
    assert _tick_labels(fig) == [f"class {i}" for i in range(k)]
    # The rows are in class order: row i of the picture holds samples i*n .. i*n + n - 1.
    img = fig.axes[0].get_images()[0].get_array()
    assert img.shape[:2] == (k * 8, n * 8)
    named = figures.class_rows_plot(x, k, class_names=[f"digit {i}" for i in range(k)], title="member 0")
    assert _tick_labels(named) == [f"digit {i}" for i in range(k)] and named.axes[0].get_title() == "member 0"


def test_class_rows_refuses_grids_that_are_not_class_major():
    with pytest.raises(ValueError, match="class-major"):
        figures.class_rows_plot(torch.zeros(7, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="3 classes but 2 class names"):
        figures.class_rows_plot(torch.zeros(6, 1, 4, 4), 3, class_names=["a", "b"])


def test_fit_draws_a_conditional_runs_samples_with_class_rows(tmp_path, monkeypatch):
    calls = []
    real = figures.class_rows

    def spy(samples, num_classes, path, **kw):
        calls.append((tuple(samples.shape), num_classes, path.name))
        return real(samples, num_classes, path, **kw)

    monkeypatch.setattr(figures, "class_rows", spy)
    G = models.CondDCGANGenerator(4, 3, 8, 1, 4)
    D = models.ProjectionDiscriminator(8, 1, 4, 3)
    gan = ganfn.GAN(G, D, latent_dim=4, num_classes=3, parts=[ganfn.parts.spectral_norm()])
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(30, 1, 8, 8, generator=g) * 2 - 1, torch.randint(3, (30,), generator=g)
    fit(gan, (images, labels), steps=1, batch_size=6, run_dir=tmp_path, progress=False, print_fn=lambda s: None)
    assert len(calls) == 1 and calls[0][1:] == (3, "samples.png") and calls[0][0][0] % 3 == 0
    assert (tmp_path / "samples.png").stat().st_size > 0
