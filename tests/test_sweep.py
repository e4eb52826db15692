"""Sweep grids, grid parsing and the member -> hyperparameter report table."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

torch.set_num_threads(1)

import ganfn  # noqa: E402
from ganfn import ensemble, sweep  # noqa: E402

names = st.sampled_from(["lr_d", "lr_g", "b1_g", "b2_d", "gp_weight", "real_label", "loss_mix"])
values = st.lists(st.floats(1e-6, 10.0, allow_nan=False), min_size=1, max_size=3, unique=True)


@settings(max_examples=30, deadline=None)
@given(spec=st.dictionaries(names, values, max_size=4))
def test_grid_is_the_cartesian_product(spec):
    members = sweep.grid(spec)
    assert len(members) == math.prod(len(v) for v in spec.values())
    assert all(set(m) == set(spec) for m in members)
    combos = [tuple(m[k] for k in spec) for m in members]
    assert combos == list(itertools.product(*spec.values()))  # first key slowest, no duplicates


def test_grid_example_from_the_issue():
    members = sweep.grid({"lr_d": [1e-4, 2e-4, 4e-4], "gp_weight": [1, 10]})
    assert len(members) == 6
    assert members[0] == {"lr_d": 1e-4, "gp_weight": 1} and members[1] == {"lr_d": 1e-4, "gp_weight": 10}
    assert members[-1] == {"lr_d": 4e-4, "gp_weight": 10}
    assert sweep.grid({}) == [{}]
    with pytest.raises(ValueError):
        sweep.grid({"lr_d": []})
    with pytest.raises(TypeError):
        sweep.grid({"lr_d": 1e-4})


@settings(max_examples=30, deadline=None)
@given(
    spec=st.dictionaries(
        names, st.lists(st.floats(1e-6, 1e3, allow_nan=False), min_size=1, max_size=3), min_size=1, max_size=4
    )
)
def test_parse_grid_round_trips_repr(spec):
    text = ";".join(f"{k}={','.join(repr(v) for v in vs)}" for k, vs in spec.items())
    assert sweep.parse_grid(text) == spec


def test_parse_grid_examples_and_errors():
    assert sweep.parse_grid("lr_d=1e-4,2e-4;gp_weight=1,10") == {"lr_d": [1e-4, 2e-4], "gp_weight": [1, 10]}
    assert sweep.parse_grid(" lr_g = 0.001 ; ") == {"lr_g": [0.001]}
    for bad in ("lr_d", "lr_d=", "lr_d=abc", "lr d=1", "lr_d=1;lr_d=2"):
        with pytest.raises(ValueError):
            sweep.parse_grid(bad)


def test_sweep_members_reach_the_stacked_state():
    G = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    gan = ganfn.GAN(G, D, latent_dim=3, loss=ganfn.losses.mixture("hinge", "non_saturating"),
                    parts=ganfn.recipes.wgan_gp())
    members = sweep.grid({"lr_d": [1e-4, 4e-4], "b1_g": [0.0, 0.5], "gp_weight": [1, 10], "real_label": [0.9],
                          "loss_mix": [0.0, 1.0]})
    state = ensemble.init_many(gan, [0] * len(members), members)
    assert state.d.opt["hp"]["lr"].tolist() == [m["lr_d"] for m in members]
    assert state.g.opt["hp"]["b1"].tolist() == [m["b1_g"] for m in members]
    for key in ("gp_weight", "real_label", "loss_mix"):
        assert state.hparams[key].tolist() == [float(m[key]) for m in members]


def test_rows_and_table_sort_and_keep_member_index():
    members = sweep.grid({"lr_d": [1e-4, 2e-4, 4e-4]})
    metrics = {"fd": torch.tensor([3.0, float("nan"), 1.0]), "diverged": torch.tensor([False, True, False])}
    rs = sweep.rows(members, metrics, sort_by="fd")
    assert [r["member"] for r in rs] == [2, 0, 1]  # NaN last
    assert rs[0]["lr_d"] == 4e-4 and rs[0]["fd"] == 1.0
    assert [r["member"] for r in sweep.rows(members, metrics, sort_by="fd", descending=True)] == [0, 2, 1]
    text = sweep.table(members, metrics, sort_by="fd", with_summary=True)
    lines = text.splitlines()
    assert lines[0] == "| member | lr_d | fd | diverged |"
    assert lines[2].startswith("| 2 | 0.0004 | 1 | no")
    assert "| 1 | 0.0002 | nan | yes |" in text
    assert lines[-1].startswith("| mean ± std |") and "2 ± 1.4" in lines[-1]  # diverged member excluded
    with pytest.raises(KeyError):
        sweep.rows(members, metrics, sort_by="nope")
    # a list of per-member dicts works too
    per = [{"fd": 2.0}, {"fd": 1.0}, {"fd": 0.5}]
    assert [r["member"] for r in sweep.rows(members, per, sort_by="fd")] == [2, 1, 0]


def test_summary_mean_std():
    s = sweep.summary({"g_loss": [1.0, 2.0, 3.0, 100.0], "diverged": [False, False, False, True]})
    mean, std, n = s["g_loss"]
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)
    s = sweep.summary({"g_loss": [1.0, 2.0]}, exclude_diverged=False)
    assert s["g_loss"][0] == 1.5
