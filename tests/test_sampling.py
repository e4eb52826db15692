"""ganfn.sampling: the truncation trick's resampled truncated normal."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ganfn
from ganfn import sampling
from ganfn.testing import strategies as gst

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)


@given(gst.seeds(), shapes, st.floats(0.05, 3.0))
def test_every_value_within_threshold_and_a_seed_fixes_the_draw(seed, shape, t):
    z = sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, t)
    assert z.shape == shape and z.dtype == torch.float32
    assert (z.abs() <= t).all()
    assert torch.equal(z, sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, t))


@given(gst.seeds(), shapes)
def test_no_threshold_is_plain_randn(seed, shape):
    ref = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, None), ref)
    assert torch.equal(sampling.truncated_normal(torch.Generator().manual_seed(seed), shape, math.inf), ref)


def test_values_inside_the_threshold_are_kept_and_the_distribution_is_the_truncated_normal():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(20000, generator=torch.Generator().manual_seed(0))
    z = sampling.truncated_normal(g, (20000,), 1.0)
    keep = ref.abs() <= 1.0
    assert torch.equal(z[keep], ref[keep])  # resampling touches only the rejected entries
    # variance of N(0, 1) truncated to [-1, 1]: 1 - 2 phi(1) / (2 Phi(1) - 1)
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    var = 1 - 2 * phi / math.erf(1 / math.sqrt(2))
    assert abs(z.mean().item()) < 0.02 and abs(z.var().item() - var) < 0.01


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "0.5"])
def test_bad_threshold_is_rejected(bad):
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        sampling.truncated_normal(torch.Generator(), (2,), bad)
    with pytest.raises(TypeError, match="torch.Generator"):
        sampling.truncated_normal(0, (2,), 1.0)


# -- standing BatchNorm statistics for the EMA generator -------------------------------------


def _bn_gan(**kw):
    from torch import nn

    import ganfn

    G = nn.Sequential(nn.Linear(3, 5, bias=False), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2))
    return ganfn.GAN(G, nn.Linear(2, 1), latent_dim=3, **kw)


def test_standing_stats_average_the_ema_generators_batch_statistics():
    gan = _bn_gan(parts=[ganfn.parts.ema(0.5)])
    state = gan.init(0)
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        state, _ = gan.train_step(state, torch.randn(8, 2, generator=rng), gan.draw_noise(rng, 8))
    params = gan.sample_params(state)
    assert not torch.equal(params["0.weight"], state.g.params["0.weight"])  # the EMA differs from G
    before = {k: v.clone() for k, v in state.g.buffers.items()}
    buf = sampling.standing_stats(gan, state, torch.Generator().manual_seed(5), batches=4, batch_size=16)
    assert all(torch.equal(before[k], state.g.buffers[k]) for k in before)  # state untouched
    zs = torch.Generator().manual_seed(5)
    hs = [gan.draw_latents(zs, 16) @ params["0.weight"].T for _ in range(4)]
    torch.testing.assert_close(buf["1.running_mean"], torch.stack([h.mean(0) for h in hs]).mean(0))
    torch.testing.assert_close(buf["1.running_var"], torch.stack([h.var(0) for h in hs]).mean(0))
    assert int(buf["1.num_batches_tracked"]) == 4
    # sampling with them: eval-mode BN now normalises with the EMA weights' statistics
    new = state._replace(g=state.g._replace(buffers=buf))
    assert gan.sample(new, gan.draw_latents(zs, 4)).shape == (4, 2)


def test_standing_stats_without_batch_norm_and_bad_arguments():
    from conftest import small_gan_modules

    import ganfn

    G, D = small_gan_modules()
    gan = ganfn.GAN(G, D, latent_dim=3)
    state = gan.init(0)
    assert sampling.standing_stats(gan, state, torch.Generator()) == state.g.buffers
    with pytest.raises(ValueError, match="batch_size >= 2"):
        sampling.standing_stats(gan, state, torch.Generator(), batch_size=1)


def test_sample_with_standing_uses_the_recomputed_statistics():
    gan = _bn_gan(parts=[ganfn.parts.ema(0.5)])
    state, rng = gan.init(0), torch.Generator().manual_seed(0)
    for _ in range(3):
        state, _ = gan.train_step(state, torch.randn(8, 2, generator=rng), gan.draw_noise(rng, 8))
    z = gan.draw_latents(torch.Generator().manual_seed(9), 6)
    buf = sampling.standing_stats(gan, state, torch.Generator().manual_seed(0), batches=3)
    want = gan.sample(state._replace(g=state.g._replace(buffers=buf)), z)
    got = gan.sample(state, z, standing=3)
    assert torch.equal(got, want)
    assert not torch.allclose(got, gan.sample(state, z))  # the live G's statistics give other samples
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="standing must be an int >= 0"):
            gan.sample(state, z, standing=bad)


def test_standing_stats_of_a_conditional_generator_draw_classes():
    import ganfn
    from ganfn import models

    G = models.CondDCGANGenerator(4, 3, 8, 1, 4)  # conditional batch norm: G(z, y)
    gan = ganfn.GAN(G, models.ProjectionDiscriminator(8, 1, 4, 3), latent_dim=4, num_classes=3,
                    parts=[ganfn.parts.spectral_norm(), ganfn.parts.ema(0.9)])
    state = gan.init(0)
    buf = sampling.standing_stats(gan, state, torch.Generator().manual_seed(0), batches=2, batch_size=8)
    assert any(not torch.equal(buf[k], state.g.buffers[k]) for k in buf if k.endswith("running_mean"))
    x = gan.sample(state, gan.draw_latents(torch.Generator().manual_seed(1), 3), torch.tensor([0, 1, 2]), standing=2)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


# ----------------------------------------------------------------- stacked states


def _stacked_gan(members: int):
    from conftest import small_gan_modules

    import ganfn
    from ganfn import ensemble

    G, D = small_gan_modules(latent=3, data=2, g_batchnorm=True)
    gan = ganfn.GAN(G, D, latent_dim=3, parts=[ganfn.parts.ema(0.9)])
    return gan, ensemble.init_many(gan, list(range(members)))


@given(st.integers(2, 4), st.integers(1, 5))
def test_sample_on_a_stacked_state_names_unstack(members, n):
    gan, state = _stacked_gan(members)
    z = gan.draw_latents(torch.Generator().manual_seed(0), n)
    with pytest.raises(ValueError, match=r"stacked .*ganfn\.unstack"):
        gan.sample(state, z)


@given(st.integers(2, 3), st.integers(1, 5))
def test_the_routes_the_error_names_sample_each_member(members, n):
    import ganfn

    gan, state = _stacked_gan(members)
    z = gan.draw_latents(torch.Generator().manual_seed(1), n)
    each = torch.stack([gan.sample(s, z) for s in ganfn.unstack(state)])
    assert each.shape == (members, n, 2)
    vmapped = torch.func.vmap(gan.sample, in_dims=(0, None))(state, z)
    torch.testing.assert_close(vmapped, each)
