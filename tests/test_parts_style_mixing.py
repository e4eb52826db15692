"""Style mixing: the StyleGAN2 generator's mixing latents (closed forms), the part's
crossover draws and probability, training-only, pure, vmapped member equals single
run, and its bad arguments."""
from __future__ import annotations

import pytest
import torch
from conftest import compiled_and_eager
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn.models import stylegan2
from ganfn.parts import Ctx
from ganfn.testing import assert_pure, assert_vmap_equivalent

torch.set_num_threads(1)
B = 4


def _G(seed=0):
    G, D = stylegan2(16, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4, mbstd_group=2,
                     generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # non-zero noise strengths, as after training
        for n, p in G.named_parameters():
            if "noise_strength" in n:
                p.add_(0.3)
    return G, D


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 100))
def test_mixing_latents_choose_each_layers_w(seed):
    G, _ = _G()
    g = torch.Generator().manual_seed(seed)
    lat, z2 = torch.randn(B, G.latent_dim, generator=g), torch.randn(B, G.z_dim, generator=g)
    noise = lat[:, G.z_dim:]
    with torch.no_grad():
        plain = G(lat)
        none = G(torch.cat([lat, z2, torch.zeros(B, G.num_ws)], 1))  # every layer from z
        every = G(torch.cat([lat, z2, torch.ones(B, G.num_ws)], 1))  # every layer from z2
        other = G(torch.cat([z2, noise], 1))
        half = G(torch.cat([lat, z2, (torch.arange(G.num_ws) >= 2).float().expand(B, -1)], 1))
    assert torch.equal(none, plain)
    torch.testing.assert_close(every, other)
    assert not torch.allclose(half, plain) and not torch.allclose(half, other)
    with pytest.raises(ValueError, match="style mixing"):
        G(torch.randn(B, G.latent_dim + 1))


def _ctx(prob, mix, cut, z_dim=4):
    noise = {"z2": torch.randn(B, z_dim), "mix": torch.full((B,), mix), "cut": torch.full((B,), cut)}
    return Ctx({}, {"mixing_prob": torch.tensor(prob, dtype=torch.float64)}, noise, torch.tensor(0))


@pytest.mark.parametrize("prob,mix,cut,first", [(0.9, 0.5, 0.0, 1), (0.9, 0.5, 0.999, 5), (0.9, 0.95, 0.3, 6),
                                                (0.0, 0.0, 0.5, 6), (1.0, 0.99, 0.5, 3)])
def test_the_crossover_is_uniform_in_1_to_num_ws_and_taken_with_mixing_prob(prob, mix, cut, first):
    part = ganfn.parts.style_mixing(prob, z_dim=4, num_ws=6)
    z = torch.randn(B, 10)
    ctx = _ctx(prob, mix, cut)
    out = part.g_latents(z, ctx)
    assert out.shape == (B, 10 + 4 + 6) and torch.equal(out[:, :10], z) and torch.equal(out[:, 10:14], ctx.noise["z2"])
    assert out[:, 14:].tolist() == [[float(i >= first) for i in range(6)]] * B


def test_mixing_happens_at_its_rate_over_draws():
    gan = ganfn.GAN(*_G(), latent_dim=_G()[0].latent_dim, parts=[ganfn.parts.style_mixing(0.3, z_dim=4, num_ws=6)])
    rng, mixed = torch.Generator().manual_seed(0), 0
    for _ in range(400):
        n = gan.draw_noise(rng, 2).g.parts["style_mixing"]
        z = torch.zeros(2, gan.latent_shape[0])
        mixed += int(ganfn.parts.style_mixing(0.3, z_dim=4, num_ws=6).g_latents(z, _ctx(0.3, 0, 0)._replace(
            noise={k: v[0] for k, v in n.items()}))[0, -1] == 1)
    assert 0.22 < mixed / 400 < 0.38


def _gan(prob=0.9):
    G, D = _G()
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, loss="non_saturating",
                     parts=[ganfn.parts.style_mixing(prob, z_dim=G.z_dim, num_ws=G.num_ws), ganfn.parts.ema(0.9)])


def test_style_mixing_step_is_pure_vmapped_members_equal_single_runs_and_sampling_never_mixes():
    gan = _gan()
    real = torch.rand(B, 3, 16, 16) * 2 - 1
    noise = gan.draw_noise(torch.Generator().manual_seed(0), B)
    assert_pure(gan.train_step, gan.init(0), real, noise, modules=[gan.generator, gan.discriminator])
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=B, hparams=[{"mixing_prob": 1.0}, {"mixing_prob": 0.5}],
                           data=lambda n, g: torch.rand(n, 3, 16, 16, generator=g) * 2 - 1)
    state = gan.init(0)
    z = gan.draw_latents(torch.Generator().manual_seed(1), B)
    plain = torch.func.functional_call(gan.generator, {**state.g.params, **state.g.buffers}, (z,))
    torch.testing.assert_close(gan.sample(state, z, ema=False), plain)  # the plain latents: no mixing


def test_mixing_changes_training_and_prob_0_does_not():
    state_fakes = []
    for prob in (0.0, 1.0):
        gan = _gan(prob)
        s = gan.init(0)
        nd = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(3), B).d, 0)
        state_fakes.append(gan.d_grads(s, torch.rand(B, 3, 16, 16), nd)[2].fake)
        if prob == 0.0:  # every layer from the first z: G on the plain latents
            plain = torch.func.functional_call(gan.generator, {**s.g.params, **s.g.buffers}, (nd.z,))
            torch.testing.assert_close(state_fakes[0], plain)
    assert not torch.allclose(state_fakes[0], state_fakes[1])


@pytest.mark.parametrize("kw", [{"z_dim": 0, "num_ws": 4}, {"z_dim": 4, "num_ws": 1}, {"z_dim": 4.0, "num_ws": 4},
                                {"z_dim": 4, "num_ws": 4, "mixing_prob": 1.5}])
def test_bad_style_mixing_arguments_are_refused(kw):
    with pytest.raises(ValueError, match="z_dim|num_ws|mixing_prob"):
        ganfn.parts.style_mixing(**kw)


def test_style_mixing_cannot_be_started_late_and_a_bad_hook_is_named():
    with pytest.raises(ValueError, match="changes G's latents"):
        ganfn.parts.starting_at(10, ganfn.parts.style_mixing(z_dim=4, num_ws=6))
    G, D = _G()
    bad = ganfn.parts.Part("halver", g_latents=lambda z, ctx: z[: z.shape[0] // 2])
    gan = ganfn.GAN(G, D, latent_dim=G.latent_dim, parts=[bad])
    with pytest.raises(ganfn.parts.PartError, match="halver"):
        gan.train_step(gan.init(0), torch.rand(B, 3, 16, 16), gan.draw_noise(torch.Generator().manual_seed(0), B))


@pytest.mark.slow
def test_style_mixing_compiles_and_equals_eager():

    from ganfn import ensemble
    from ganfn.testing import assert_trees_close

    torch._dynamo.reset()
    gan = _gan()
    state = ensemble.init_many(gan, [0, 1], [{"mixing_prob": 1.0}, {}])
    rng = torch.Generator().manual_seed(5)
    reals = [torch.rand(B, 3, 16, 16, generator=rng) * 2 - 1 for _ in range(2)]
    (compiled, _), (eager, _) = compiled_and_eager(gan, state, reals, B)
    assert_trees_close(compiled, eager, "compiled vs eager", rtol=1e-4, atol=1e-5)
