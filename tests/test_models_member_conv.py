"""ganfn.models.member_conv: under vmap, one convolution per member equals
vmap's folded convolution to round-off in outputs, input and weight gradients
and gradients of gradients (R1 / R2 and one order more), for any shapes,
groups, paddings and batching (hypothesis); outside vmap it is F.conv2d
exactly; small convolutions keep the folded form; an R3GAN step with every
convolution per member still equals its single runs; and R3GAN's vmapped
bilinear downsampling equals each member's."""
from __future__ import annotations

import contextlib
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, vmap

import ganfn
from ganfn import optim, penalties
from ganfn.models import member_conv, r3gan
from ganfn.models.member_conv import member_conv2d
from ganfn.models.r3gan import bilinear_down
from ganfn.testing import assert_vmap_equivalent

torch.set_num_threads(1)
r3gan_mod = sys.modules["ganfn.models.r3gan"]  # the module (``ganfn.models.r3gan`` is the function)


@contextlib.contextmanager
def per_member(min_macs: int = 0):
    """Convolutions of at least ``min_macs`` take the per-member form under
    vmap; yields a list that grows by one on each call of its vmap rule."""
    calls: list[int] = []
    real = member_conv._loop
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(member_conv, "MEMBER_MIN_MACS", min_macs)
        mp.setattr(member_conv, "_loop", lambda *a, **k: calls.append(1) or real(*a, **k))
        yield calls


@pytest.fixture
def always():
    with per_member() as calls:
        yield calls


def _grads(conv, pad: int, groups: int):
    """w, x -> (D, dD/dw, dD/dx) of an R1-style loss D + |dD/dx|^2, and a third-order term."""
    def d(w, x):
        return F.leaky_relu(conv(x, w, pad, groups), 0.2).square().sum()

    def loss(w, x):
        return d(w, x) + grad(d, argnums=1)(w, x).square().sum()

    def third(w, x):
        return grad(loss, argnums=0)(w, x).square().sum()
    return lambda w, x: (loss(w, x), *grad(loss, argnums=(0, 1))(w, x), *grad(third, argnums=(0, 1))(w, x))


def _plain(x, w, pad, groups):
    return F.conv2d(x, w, padding=pad, groups=groups)


shapes = st.fixed_dictionaries({
    "S": st.integers(1, 3), "B": st.integers(1, 3), "cg": st.integers(1, 3), "og": st.integers(1, 3),
    "groups": st.integers(1, 3), "k": st.sampled_from([1, 3, 4]), "pad": st.integers(0, 2),
    "h": st.integers(4, 6), "w": st.integers(4, 7), "seed": st.integers(0, 2**16),
    "in_dims": st.sampled_from([(0, 0), (None, 0), (0, None), (2, 1)]),
})


@given(shapes)
@settings(max_examples=25, deadline=None)
def test_vmapped_equals_folded_conv_to_any_order(c):
    S, g = c["S"], c["groups"]
    gen = torch.Generator().manual_seed(c["seed"])
    w = torch.randn(S, c["og"] * g, c["cg"], c["k"], c["k"], dtype=torch.double, generator=gen)
    x = torch.randn(S, c["B"], c["cg"] * g, c["h"], c["w"], dtype=torch.double, generator=gen)
    w_dim, x_dim = c["in_dims"]
    w = w[0] if w_dim is None else w.movedim(0, w_dim)
    x = x[0] if x_dim is None else x.movedim(0, x_dim)
    ref = vmap(_grads(_plain, c["pad"], g), in_dims=(w_dim, x_dim))(w, x)
    with per_member() as calls:
        ours = vmap(_grads(member_conv2d, c["pad"], g), in_dims=(w_dim, x_dim))(w, x)
    assert calls or w_dim is None  # a shared weight folds the members into the batch instead
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_outside_vmap_it_is_conv2d_exactly(always):
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 4, 6, 6, generator=gen), torch.randn(6, 2, 3, 3, generator=gen)
    assert torch.equal(member_conv2d(x, w, 1, 2), F.conv2d(x, w, padding=1, groups=2))
    gx, gw = grad(lambda x, w: member_conv2d(x, w, 1, 2).sin().sum(), argnums=(0, 1))(x, w)
    rx, rw = grad(lambda x, w: F.conv2d(x, w, padding=1, groups=2).sin().sum(), argnums=(0, 1))(x, w)
    assert torch.equal(gx, rx) and torch.equal(gw, rw)
    assert not always


def test_small_convolutions_keep_the_folded_form():
    x, w = torch.randn(2, 1, 4, 5, 5), torch.randn(2, 4, 4, 3, 3)
    macs = 1 * 4 * 5 * 5 * 4 * 9  # one member's multiply-adds
    with per_member(macs + 1) as calls:
        vmap(lambda x, w: member_conv2d(x, w, 1))(x, w)
    assert not calls
    with per_member(macs) as calls:
        vmap(lambda x, w: member_conv2d(x, w, 1))(x, w)
    assert calls


def test_r3gan_members_with_per_member_convs_equal_their_single_runs(always, monkeypatch):
    monkeypatch.setattr(r3gan_mod._Conv, "forward", lambda self, x: member_conv2d(x, self.weight, self.padding,
                                                                                   self.groups))
    G, D = r3gan(8, 3, latent_dim=4, width=8, blocks=1, group_channels=4)
    parts = [penalties.as_part(penalties.r1(0.05)), penalties.as_part(penalties.r2(0.05))]
    gan = ganfn.GAN(G, D, latent_dim=4, loss="rpgan", g_optimizer=optim.adam(2e-4, (0.0, 0.9)),
                    d_optimizer=optim.adam(2e-4, (0.0, 0.9)), parts=parts)
    assert_vmap_equivalent(gan, [0, 1, 2], steps=2, batch_size=4)
    assert always  # the per-member form ran


@given(S=st.integers(1, 3), B=st.integers(1, 3), C=st.integers(1, 4), h=st.sampled_from([2, 4, 8]),
       seed=st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_vmapped_bilinear_down_equals_each_member(S, B, C, h, seed):
    """Under vmap the depthwise form; each member's single run the single-channel one."""
    x = torch.randn(S, B, C, h, h, dtype=torch.double, generator=torch.Generator().manual_seed(seed))

    def f(x):
        return bilinear_down(x).sin().square().sum()

    def r1(x):
        return grad(f)(x).square().sum()
    out, g, gg = vmap(bilinear_down)(x), vmap(grad(f))(x), vmap(grad(r1))(x)
    for i in range(S):
        torch.testing.assert_close(out[i], bilinear_down(x[i]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g[i], grad(f)(x[i]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gg[i], grad(r1)(x[i]), rtol=1e-12, atol=1e-12)
