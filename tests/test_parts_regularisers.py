"""DRAGAN, one-sided GP, bCR and top-k as parts of a GAN step."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import losses, models, parts, regularisers
from ganfn.testing import assert_pure, assert_vmap_equivalent
from ganfn.testing import strategies as gst

torch.set_num_threads(1)
B = 6


def _linear_gan(part):
    return ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="wasserstein", parts=[part])


def _d_aux(gan, state, seed):
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B)
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 1))
    return gan.d_grads(state, real, ganfn.tree_index(noise.d, 0))[2]


@settings(max_examples=8)
@given(gst.seeds(1000), st.floats(0.0, 20.0))
def test_dragan_and_one_sided_gp_on_a_linear_critic_are_closed_forms(seed, weight):
    for part, _key, f in ((parts.dragan(weight), "dragan_weight", lambda n: (n - 1) ** 2),
                         (parts.one_sided_gp(weight), "ogp_weight", lambda n: torch.clamp(n - 1, min=0) ** 2)):
        gan = _linear_gan(part)
        state = gan.init(seed)
        n = state.d.params["weight"].double().norm()
        torch.testing.assert_close(_d_aux(gan, state, seed).penalty.double(), weight * f(n), rtol=1e-4, atol=1e-6)


def test_penalty_parts_refuse_batch_norm_discriminators():
    D = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    for part in (parts.dragan(), parts.one_sided_gp()):
        with pytest.raises(ValueError, match="per-sample input gradients"):
            ganfn.GAN(nn.Linear(3, 2), D, latent_dim=3, parts=[part])


def _conv_gan(*ps, loss="non_saturating"):
    G = models.DCGANGenerator(4, size=8, channels=1, width=4, norm="none")
    D = models.DCGANDiscriminator(size=8, channels=1, width=4, norm="none")
    return ganfn.GAN(G, D, latent_dim=4, loss=loss, parts=list(ps))


def test_bcr_part_adds_the_consistency_term_on_real_and_fake():
    gan = _conv_gan(parts.bcr(2.0, 3.0, policy="translation,cutout"))
    state = gan.init(0)
    real = torch.rand(B, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noise = gan.draw_noise(torch.Generator().manual_seed(2), B)
    nd = ganfn.tree_index(noise.d, 0)
    aux = gan.d_grads(state, real, nd)[2]
    mine = nd.parts["bcr"]
    side = lambda s: {k.split("/", 1)[1]: v for k, v in mine.items() if k.startswith(s + "/")}
    d_fn = lambda x: gan.d_apply(state.d.params, state.d.buffers, x)[0]
    want = regularisers.bcr_term(d_fn, real, aux.fake, side("real"), side("fake"), 2.0, 3.0,
                                 policy="translation,cutout")
    torch.testing.assert_close(aux.penalty.float(), want, rtol=1e-5, atol=1e-7)
    assert float(want) > 0


def test_top_k_part_keeps_the_k_best_fakes_in_g_loss():
    gan = _conv_gan(parts.top_k("non_saturating", steps_per_epoch=1, gamma=0.5, min_fraction=0.5))
    plain = _conv_gan()
    state, pstate = gan.init(0), plain.init(0)
    ng = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(3), B).g, 0)
    # step 0: k = B, the plain loss
    torch.testing.assert_close(gan.g_grads(state, ng)[0], plain.g_grads(pstate, ng)[0])
    # after 3 epochs: k = max(0.5^3, 0.5) * B = 3 of 6
    later = state._replace(step=torch.tensor(3))
    loss = gan.g_grads(later, ng)[0]
    fake = gan.g_apply(state.g.params, state.g.buffers, ng.z)[0]
    out = gan.d_apply(state.d.params, state.d.buffers, fake)[0]
    per = losses.non_saturating.g(out, reduction="none")
    torch.testing.assert_close(loss, losses.top_k(per, out, 3), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="loss on D's fake outputs"):
        parts.top_k(losses.rpgan, steps_per_epoch=1)


def test_regulariser_parts_are_pure_and_vmap_equivalent():
    gan = _conv_gan(parts.bcr(), parts.dragan(1.0), parts.one_sided_gp(1.0),
                    parts.top_k("non_saturating", steps_per_epoch=1))
    real = torch.rand(B, 1, 8, 8) * 2 - 1
    assert_pure(gan.train_step, gan.init(0), real, gan.draw_noise(torch.Generator().manual_seed(0), B))
    data = lambda n, g: torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    assert_vmap_equivalent(gan, [0, 1], steps=2, batch_size=B, data=data,
                           hparams=[{"bcr_real": 0.0, "topk_min": 0.25}, {"dragan_weight": 5.0}])
