"""ganfn.schedules: end points, monotonicity, per-member values under vmap, and schedules as hyperparameters."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import optim, parts, penalties, schedules
from ganfn.testing import assert_vmap_equivalent

torch.set_num_threads(1)
finite = st.floats(-100.0, 100.0, allow_nan=False)
counts = st.integers(1, 10_000)


def _gan(*ps, g_opt=None):
    return ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="wasserstein", parts=list(ps),
                     g_optimizer=g_opt)


@given(finite, finite, counts, st.integers(0, 1000), st.sampled_from([schedules.linear, schedules.cosine]))
def test_linear_and_cosine_hold_their_end_points_and_move_monotonically(start, end, steps, begin, kind):
    s = kind(start, end, steps, begin=begin)
    assert float(s(0)) == start and float(s(begin)) == start
    assert math.isclose(float(s(begin + steps)), end, rel_tol=1e-12, abs_tol=1e-12)
    assert float(s(begin + steps + 123)) == float(s(begin + steps))
    vals = s(torch.arange(0, begin + steps + 5, max(1, steps // 50)))
    diffs = torch.diff(vals) * (1.0 if end >= start else -1.0)
    assert bool((diffs >= -1e-12).all()), "a schedule between two end points moves one way only"


@given(st.lists(st.integers(0, 1000), min_size=0, max_size=4, unique=True), st.data())
def test_piecewise_takes_the_value_of_the_last_boundary_passed(boundaries, data):
    boundaries = sorted(boundaries)
    values = data.draw(st.lists(finite, min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
    s = schedules.piecewise(boundaries, values)
    for t in [0, *boundaries, *(b - 1 for b in boundaries if b > 0), 2000]:
        want = values[sum(1 for b in boundaries if t >= b)]
        assert float(s(t)) == want


def test_constant_is_its_value_and_a_tensor_step_gives_a_tensor():
    s = schedules.constant(0.25)
    out = s(torch.tensor(7))
    assert out.shape == () and out.dtype == torch.float64 and float(out) == 0.25


def test_bad_schedules_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="steps"):
        schedules.linear(1.0, 0.0, 0)
    with pytest.raises(ValueError, match="one value more"):
        schedules.piecewise([10], [1.0])
    with pytest.raises(ValueError, match="increasing"):
        schedules.piecewise([20, 10], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"r1 gamma.end"):
        penalties.r1(schedules.linear(1.0, -1.0, 10))
    with pytest.raises(ValueError, match=r"ema_decay.start"):
        _gan(parts.ema(schedules.linear(2.0, 0.9, 10)))
    with pytest.raises(ValueError, match=r"beta2.end"):
        optim.adam(1e-3, (0.5, schedules.linear(0.9, 1.5, 10)))


@settings(max_examples=10)
@given(st.lists(st.tuples(finite, finite), min_size=1, max_size=4), st.integers(0, 300))
def test_vmapped_member_equals_single(ends, step):
    starts = torch.tensor([a for a, _ in ends], dtype=torch.float64)
    stops = torch.tensor([b for _, b in ends], dtype=torch.float64)
    for kind in (schedules.linear, schedules.cosine):
        def f(a, b, kind=kind):
            return kind(a, b, 100, begin=20)(torch.tensor(step))
        many = torch.func.vmap(f)(starts, stops)
        for i in range(len(ends)):
            assert float(many[i]) == float(f(starts[i], stops[i]))


def test_a_scheduled_weight_is_stored_as_fields_and_evaluated_at_the_step():
    gan = _gan(penalties.as_part(penalties.gradient_penalty(schedules.linear(4.0, 0.0, 8))))
    state = gan.init(0, **{"gp_weight.end": 2.0})
    assert {"gp_weight.start", "gp_weight.end", "gp_weight.begin", "gp_weight.steps"} <= set(state.hparams)
    assert "gp_weight" not in state.hparams
    for step, want in ((0, 4.0), (4, 3.0), (8, 2.0), (20, 2.0)):
        st_ = state._replace(step=torch.tensor(step))
        assert float(gan.ctx(gan.part("gp"), st_).hp["gp_weight"]) == want


def test_a_scheduled_weight_scales_the_penalty_as_its_value_does():
    sched = _gan(penalties.as_part(penalties.gradient_penalty(schedules.linear(4.0, 0.0, 8))))
    fixed = _gan(penalties.as_part(penalties.gradient_penalty(3.0)))
    real = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    noise = ganfn.tree_index(sched.draw_noise(torch.Generator().manual_seed(2), 6).d, 0)
    s1 = sched.init(0)._replace(step=torch.tensor(2))  # weight 4 - 4 * 2 / 8 = 3
    s2 = fixed.init(0)._replace(step=torch.tensor(2))
    torch.testing.assert_close(sched.d_grads(s1, real, noise)[2].penalty, fixed.d_grads(s2, real, noise)[2].penalty)


def test_a_sweep_over_a_schedules_end_points_runs_vmapped_as_single_members():
    gan = _gan(parts.ema(schedules.linear(0.5, 0.99, 3)),
               penalties.as_part(penalties.r1(schedules.cosine(1.0, 0.1, 2))),
               g_opt=optim.adam(schedules.linear(1e-3, 1e-4, 2), (0.5, schedules.linear(0.9, 0.99, 2))))
    hps = [{"ema_decay.end": 0.9, "r1_weight.start": 2.0, "lr.end_g": 5e-4, "b2.start_g": 0.95}, {}]
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=4, hparams=hps)


def test_an_optimizers_scheduled_lr_is_evaluated_at_its_update_count():
    opt = optim.sgd(schedules.piecewise([2], [0.1, 0.01]))
    params = {"w": torch.zeros(3, dtype=torch.float64)}
    state = opt.init(params)
    grads = {"w": torch.ones(3, dtype=torch.float64)}
    lrs = []
    for _ in range(4):
        lrs.append(float(opt.lr(state)))
        params, state = opt.update(grads, state, params)
    assert lrs == [0.1, 0.1, 0.01, 0.01]
    torch.testing.assert_close(params["w"], torch.full((3,), -0.22, dtype=torch.float64))


def test_linear_decay_multiplier_is_the_linear_schedule():
    s = optim.linear_decay(10, 0.2)
    for c in (0, 3, 10, 15):
        assert float(s(torch.tensor(c))) == 1.0 - (1.0 - 0.2) * min(c / 10, 1.0)
