"""ganfn.augment: DiffAugment's operations (exact effects, gradients, purity,
determinism, vmap) and ADA's controller."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfn import augment
from ganfn.testing import assert_pure
from ganfn.testing import strategies as gst

POLICY = "color,translation,cutout"
images = gst.batches(st.tuples(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9)), max_batch=5, kind="image")
probs = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0))
policies = st.sampled_from(["color", "translation", "cutout", POLICY, ["translation", "brightness"], "contrast,cutout"])


def noise_for(x, policy, seed, dtype=None):
    return augment.draw(torch.Generator().manual_seed(seed), x.shape[0], policy, dtype=dtype or x.dtype)


# -- exact effects of each operation --------------------------------------------------------


@given(images, gst.seeds())
def test_brightness_saturation_contrast_closed_forms(x, seed):
    u = torch.rand(x.shape[0], 1, generator=torch.Generator().manual_seed(seed))
    b = augment.brightness(x, u)
    torch.testing.assert_close(b - x, (u - 0.5).reshape(-1, 1, 1, 1).expand_as(x))
    s = augment.saturation(x, u)
    torch.testing.assert_close(s.mean(1), x.mean(1))  # the mean over channels is kept
    torch.testing.assert_close(s - s.mean(1, keepdim=True), (x - x.mean(1, keepdim=True)) * 2 * u.reshape(-1, 1, 1, 1))
    c = augment.contrast(x, u)
    torch.testing.assert_close(c.mean((1, 2, 3)), x.mean((1, 2, 3)))
    torch.testing.assert_close(c - c.mean((1, 2, 3), keepdim=True),
                               (x - x.mean((1, 2, 3), keepdim=True)) * (u.reshape(-1, 1, 1, 1) + 0.5))


def reference_shift(x, dy, dx):
    """Zero-filled integer shift by explicit slicing (the definition)."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[..., i, j] = x[..., i - dy, j - dx]
    return out


@given(images, gst.seeds(), st.sampled_from([0.125, 0.25, 0.5]))
def test_translation_is_a_zero_filled_integer_shift_within_the_ratio(x, seed, ratio):
    u = torch.rand(x.shape[0], 2, generator=torch.Generator().manual_seed(seed))
    out = augment.translation(x, u, ratio)
    H, W = x.shape[-2:]
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    for b in range(x.shape[0]):
        dy = int(torch.floor(u[b, 0] * (2 * sh + 1))) - sh
        dx = int(torch.floor(u[b, 1] * (2 * sw + 1))) - sw
        assert abs(dy) <= sh and abs(dx) <= sw
        assert torch.equal(out[b], reference_shift(x[b], dy, dx))


def test_translation_extremes_reach_both_ends():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    lo = augment.translation(x, torch.tensor([[0.0, 0.0]]))  # shift -1, -1
    hi = augment.translation(x, torch.tensor([[0.9999, 0.9999]]))  # shift +1, +1
    assert torch.equal(lo, reference_shift(x, -1, -1)) and torch.equal(hi, reference_shift(x, 1, 1))


@given(images, gst.seeds(), st.sampled_from([0.25, 0.5]))
def test_cutout_zeroes_one_rectangle_of_the_ratio_and_keeps_the_rest(x, seed, ratio):
    x = x.abs() + 1  # no zeros of its own
    u = torch.rand(x.shape[0], 2, generator=torch.Generator().manual_seed(seed))
    out = augment.cutout(x, u, ratio)
    H, W = x.shape[-2:]
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # the same pixels in every channel
    assert torch.equal(out[~zero], x[~zero])
    for b in range(x.shape[0]):
        rows = zero[b, 0].any(1).nonzero().flatten()
        cols = zero[b, 0].any(0).nonzero().flatten()
        assert 0 < len(rows) <= ch and 0 < len(cols) <= cw
        assert int(zero[b, 0].sum()) == len(rows) * len(cols)  # a rectangle
        assert rows.diff().le(1).all() and cols.diff().le(1).all()


# -- apply: gates, p, errors --------------------------------------------------------------


@given(images, gst.seeds(), policies)
def test_p_zero_is_identity_and_p_one_applies_every_op(x, seed, policy):
    n = noise_for(x, policy, seed)
    assert torch.equal(augment.apply(x, n, policy, p=0.0), x)
    ref = x
    for op in augment.parse_policy(policy):
        ref = augment.OPS[op].fn(ref, n[op])
    assert torch.equal(augment.apply(x, n, policy, p=1.0), ref)


@given(images, gst.seeds(), probs)
def test_each_op_runs_on_a_sample_exactly_when_its_gate_is_below_p(x, seed, p):
    n = noise_for(x, "brightness", seed)
    out = augment.apply(x, n, "brightness", p)
    on = n["gate"][:, 0] < p
    assert torch.equal(out[~on], x[~on])
    assert torch.equal(out[on], augment.brightness(x, n["brightness"])[on])


def test_gate_frequency_follows_p():
    x = torch.zeros(4000, 1, 2, 2)
    n = augment.draw(torch.Generator().manual_seed(0), 4000, "brightness")
    changed = (augment.apply(x, n, "brightness", 0.3) != 0).flatten(1).any(1).float().mean()
    assert abs(changed.item() - 0.3) < 0.03


@given(images, gst.seeds(), policies, probs)
def test_same_noise_same_output_and_inputs_untouched(x, seed, policy, p):
    n = noise_for(x, policy, seed)
    assert_pure(augment.apply, x, n, policy, p)
    assert torch.equal(augment.apply(x, n, policy, p), augment.apply(x.clone(), noise_for(x, policy, seed), policy, p))


def test_different_noise_gives_different_images():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = augment.apply(x, noise_for(x, POLICY, 0), POLICY)
    b = augment.apply(x, noise_for(x, POLICY, 1), POLICY)
    assert not torch.equal(a, b)


@given(gst.batches((1, 3, 3), max_batch=3, dtype=torch.float64), gst.seeds(), policies, probs)
def test_differentiable_wrt_images(x, seed, policy, p):
    n = noise_for(x, policy, seed, torch.float64)
    assert torch.autograd.gradcheck(lambda inp: augment.apply(inp, n, policy, p), (x.clone().requires_grad_(True),))
    # and through torch.func, as inside a GAN step
    g = torch.func.grad(lambda inp: augment.apply(inp, n, policy, p).square().sum())(x)
    assert torch.isfinite(g).all() and g.shape == x.shape


@given(st.integers(1, 4), images, gst.seeds(), policies)
def test_vmap_over_members_equals_each_member(S, x, seed, policy):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.stack([x + i for i in range(S)])
    ns = {k: torch.rand(S, *s, generator=gen) for k, s in augment.noise_shapes(policy, x.shape[0]).items()}
    ps = torch.rand(S, generator=gen)
    out = torch.func.vmap(lambda xi, ni, pi: augment.apply(xi, ni, policy, pi))(xs, ns, ps)
    for i in range(S):
        assert torch.equal(out[i], augment.apply(xs[i], {k: v[i] for k, v in ns.items()}, policy, float(ps[i])))


def test_parse_policy_and_errors():
    assert augment.parse_policy(POLICY) == ("brightness", "saturation", "contrast", "translation", "cutout")
    assert augment.parse_policy(["cutout", "brightness"]) == ("cutout", "brightness")
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'.*color"):
        augment.parse_policy("color,rotate")
    with pytest.raises(ValueError, match="repeats"):
        augment.parse_policy("color,brightness")
    with pytest.raises(ValueError, match="empty"):
        augment.parse_policy([])
    x = torch.zeros(2, 1, 4, 4)
    n = noise_for(x, "cutout", 0)
    with pytest.raises(ValueError, match=r"lacks 'translation'"):
        augment.apply(x, n, "translation")
    with pytest.raises(ValueError, match=r"'gate' has shape \(2, 1\), expected \(3, 1\)"):
        augment.apply(torch.zeros(3, 1, 4, 4), n, "cutout")
    with pytest.raises(ValueError, match=r"'cutout' has shape \(2, 3\), expected \(2, 2\)"):
        augment.apply(x, {**n, "cutout": torch.zeros(2, 3)}, "cutout")
    with pytest.raises(ValueError, match=r"images \[B, C, H, W\]"):
        augment.apply(torch.zeros(2, 16), n, "cutout")
    for bad in (-0.1, 1.5, torch.tensor(2.0)):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
            augment.apply(x, n, "cutout", bad)
    with pytest.raises(TypeError, match="torch.Generator"):
        augment.draw(0, 2, "cutout")


# -- ADA's controller --------------------------------------------------------------------


def run_ada(scores_fn, updates, **kw):
    s = augment.ada_init(0.5)
    ps = []
    for i in range(updates):
        s = augment.ada_update(s, scores_fn(i), **kw)
        ps.append(float(s.p))
    return s, ps


@given(st.floats(0.0, 0.95), st.integers(1, 6), st.integers(1, 32))
def test_ada_p_rises_when_d_is_overconfident_on_reals_and_falls_otherwise(target, interval, B):
    kw = dict(target=target, interval=interval, speed_images=1000.0)
    # Every real judged real: r_t = 1 > target (D overfits the training set).
    _, up = run_ada(lambda i: torch.full((B, 1), 3.0), 3 * interval, **kw)
    # Every real judged fake: r_t = -1 < target.
    _, down = run_ada(lambda i: torch.full((B,), -3.0), 3 * interval, **kw)
    step = B * interval / 1000.0
    for k in range(3):
        # p moves only at the end of each interval, by n_images / speed_images.
        assert up[(k + 1) * interval - 1] == pytest.approx(min(0.5 + (k + 1) * step, 1.0), abs=1e-6)
        assert down[(k + 1) * interval - 1] == pytest.approx(max(0.5 - (k + 1) * step, 0.0), abs=1e-6)
    assert all(p == pytest.approx(0.5) for p in up[: interval - 1])


def test_ada_rt_is_the_mean_sign_and_p_stays_in_unit_interval():
    scores = torch.tensor([2.0, 1.0, -1.0, 0.5])  # r_t = 0.5
    s = augment.ada_update(augment.ada_init(0.0), scores, interval=1, target=0.6, speed_images=1.0)
    assert float(s.rt) == 0.5 and float(s.p) == 0.0  # clamped below
    s = augment.ada_update(augment.ada_init(1.0), scores, interval=1, target=0.4, speed_images=1.0)
    assert float(s.p) == 1.0  # clamped above
    # the threshold separates real from fake (e.g. 0.5 for least squares)
    s = augment.ada_update(augment.ada_init(0.5), scores, interval=1, threshold=1.5, speed_images=100.0)
    assert float(s.rt) == -0.5 and float(s.p) == pytest.approx(0.46)
    assert int(s.n_updates) == 0 and float(s.n_real) == 0.0 and float(s.sign_sum) == 0.0


def test_ada_under_vmap_per_member_targets_equals_single_runs():
    targets = torch.tensor([0.0, 0.6, 0.9])
    scores = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) + 0.8
    states = augment.AdaState(*[torch.stack([t] * 3) for t in augment.ada_init(0.5)])
    step = torch.func.vmap(lambda s, x, t: augment.ada_update(s, x, target=t, interval=1, speed_images=80.0))
    out = step(states, scores, targets)
    for i in range(3):
        single = augment.ada_update(augment.ada_init(0.5), scores[i], target=float(targets[i]), interval=1,
                                    speed_images=80.0)
        assert torch.equal(out.p[i], single.p) and torch.equal(out.rt[i], single.rt)
    assert out.p[0] > 0.5 > out.p[2]


def test_ada_errors():
    with pytest.raises(ValueError, match="interval"):
        augment.ada_update(augment.ada_init(), torch.zeros(2), interval=0)
    with pytest.raises(ValueError, match="initial p"):
        augment.ada_init(1.5)
