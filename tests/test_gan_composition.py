"""The slim GAN: parts run in the order listed, removed short-hands name their part, recipes, losses own their
targets."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import losses, models, parts, penalties, recipes
from ganfn.gan_parts import REMOVED
from ganfn.parts import Part

torch.set_num_threads(1)
B = 4


def _nets():
    return (nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)),
            nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)))


def _project_to_zero() -> Part:
    """A user's after_g part: G's weights projected onto {0} (any projection shows the order)."""
    return Part("project", after_g=lambda g, ctx, aux: ({k: torch.zeros_like(v) for k, v in g.items()}, ctx.state))


def _step(gan, seed=0):
    state = gan.init(seed)
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B)
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 1))
    return state, gan.train_step(state, real, noise)[0]


@settings(max_examples=5)
@given(st.floats(0.1, 0.9), st.integers(0, 100))
def test_ema_listed_after_a_projection_averages_the_projected_weights(decay, seed):
    ema = parts.ema(decay, warmup=False)
    after = ganfn.GAN(*_nets(), latent_dim=3, parts=[_project_to_zero(), ema])
    before = ganfn.GAN(*_nets(), latent_dim=3, parts=[ema, _project_to_zero()])
    s0, s1 = _step(after, seed)
    b0, b1 = _step(before, seed)
    free = ganfn.GAN(*_nets(), latent_dim=3)  # the G update itself, with no part after it
    _, f1 = _step(free, seed)
    for k, e0 in s0.parts["ema"]["params"].items():
        assert torch.count_nonzero(s1.g.params[k]) == 0 and torch.count_nonzero(b1.g.params[k]) == 0
        # Projection first: the EMA takes in the projected (zero) weights.
        torch.testing.assert_close(s1.parts["ema"]["params"][k], decay * e0, rtol=1e-6, atol=1e-7)
        # EMA first: it takes in G's updated, unprojected weights.
        torch.testing.assert_close(b1.parts["ema"]["params"][k], torch.lerp(e0, f1.g.params[k], 1 - decay),
                                   rtol=1e-5, atol=1e-6)
    assert not torch.allclose(s1.parts["ema"]["params"]["0.weight"], b1.parts["ema"]["params"]["0.weight"])


def test_parts_run_and_draw_noise_in_the_order_listed():
    gan = ganfn.GAN(*_nets(), latent_dim=3, parts=[parts.ema(), penalties.r1(), parts.instance_noise(0.1)])
    assert [p.name for p in gan.parts] == ["ema", "r1", "instance_noise"]
    gan2 = ganfn.GAN(*_nets(), latent_dim=3, parts=[parts.instance_noise(0.1), penalties.gradient_penalty()])
    noise = gan2.draw_noise(torch.Generator().manual_seed(0), B)
    assert list(noise.d.parts) == ["instance_noise", "gp"]


@pytest.mark.parametrize("key", sorted(REMOVED))
def test_a_removed_keyword_raises_a_type_error_naming_its_part(key):
    with pytest.raises(TypeError, match=rf"no longer takes {key}=.*use .*ganfn\.(parts|penalties|losses|recipes)"):
        ganfn.GAN(*_nets(), latent_dim=3, **{key: 0.5})


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_critics'"):
        ganfn.GAN(*_nets(), latent_dim=3, n_critics=2)


def test_a_discriminator_that_wants_spectral_norm_must_get_it_explicitly():
    G, D, z = models.build("sngan", (1, 8, 8), latent_dim=8)
    with pytest.raises(ValueError, match="wants_spectral_norm.*parts.spectral_norm"):
        ganfn.GAN(G, D, latent_dim=z, loss="hinge")
    gan = ganfn.GAN(G, D, latent_dim=z, loss="hinge", parts=recipes.sngan())
    assert [p.name for p in gan.parts] == ["spectral_norm"]


def test_recipes_are_part_lists_with_their_papers_settings():
    assert [p.name for p in recipes.wgan_gp()] == ["gp"] and recipes.wgan_gp()[0].defaults()["gp_weight"].value == 10.0
    assert [p.name for p in recipes.wgan_gp(5.0, every=4, ema_decay=0.999)] == ["gp", "ema"]
    assert [p.name for p in recipes.wgan()] == ["weight_clip"]
    assert [p.name for p in recipes.sngan(ema_decay=0.99)] == ["spectral_norm", "ema"]
    assert recipes.dcgan() == []
    order = recipes.classic(penalties=[penalties.r1()], spectral_norm=True, instance_noise=0.1, replay_size=8,
                            d_skip_accuracy=0.8, ema_decay=0.9)
    assert [p.name for p in order] == ["r1", "spectral_norm", "instance_noise", "replay", "balance", "ema"]
    with pytest.raises(ValueError, match="instance_noise > 0"):
        recipes.classic(instance_noise_anneal=5)
    with pytest.raises(ValueError, match="sn_iters"):
        recipes.classic(spectral_norm=True, sn_iters=0)


@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_a_loss_owns_its_targets_kept_per_member(real_label, fake_label):
    loss = losses.with_targets("non_saturating", real_label=real_label, fake_label=fake_label)
    gan = ganfn.GAN(*_nets(), latent_dim=3, loss=loss)
    assert gan.defaults["real_label"] == real_label and gan.defaults["fake_label"] == fake_label
    assert gan.defaults["g_target"] == 1.0
    assert losses.bce(real_label=0.9).targets["real_label"] == 0.9
    assert float(gan.init(0, real_label=0.7).hparams["real_label"]) == pytest.approx(0.7)


def test_a_bce_target_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="real_label"):
        ganfn.GAN(*_nets(), latent_dim=3, loss=losses.bce(real_label=1.5))
