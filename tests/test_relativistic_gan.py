"""Relativistic losses (RpGAN, RaGAN) inside the GAN step: G's loss sees D's
outputs on the last D update's real batch; the R3GAN preset."""
from __future__ import annotations

import pytest
import torch
from conftest import small_gan_modules

import ganfn
from ganfn import losses, penalties
from ganfn.testing import assert_pure, assert_vmap_equivalent

torch.set_num_threads(1)
B = 8


def _gan(loss="rpgan", **kw):
    G, D = small_gan_modules()
    return ganfn.GAN(G, D, latent_dim=3, loss=loss, **kw)


@pytest.mark.parametrize("name", ["rpgan", "ragan"])
def test_g_loss_compares_fakes_with_d_on_the_real_batch(name):
    gan = _gan(name)
    assert gan.loss is losses.get(name) and gan.loss.g_needs_real
    state, real = gan.init(0), torch.randn(B, 2, generator=torch.Generator().manual_seed(1))
    ng = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(2), B).g, 0)
    loss, grads, _ = gan.g_grads(state, ng, real)
    fake = gan.g_apply(state.g.params, state.g.buffers, ng.z)[0]
    d = lambda x: gan.d_apply(state.d.params, state.d.buffers, x)[0]
    torch.testing.assert_close(loss, gan.loss.g(d(fake), real_out=d(real)))
    assert set(grads) == set(state.g.params)
    with pytest.raises(ValueError, match="pass g_grads\\(state, noise_g, real\\)"):
        gan.g_grads(state, ng)


def test_train_step_passes_the_last_d_batch_and_is_pure_and_vmappable():
    gan = _gan("rpgan", n_critic=2, parts=[penalties.r1(0.1), penalties.r2(0.1)])
    state = gan.init(0)
    real = torch.randn(2, B, 2, generator=torch.Generator().manual_seed(1))
    noise = gan.draw_noise(torch.Generator().manual_seed(2), B)
    new, m = assert_pure(gan.train_step, state, real, noise)
    # by hand: two D updates, then G against D's outputs on real[1]
    s = state
    for i in range(2):
        s = gan.d_update(s, *gan.d_grads(s, real[i], ganfn.tree_index(noise.d, i))[1:])
    g_loss, g, aux = gan.g_grads(s, ganfn.tree_index(noise.g, 0), real[1])
    assert torch.equal(m["g_loss"], g_loss)
    assert_vmap_equivalent(_gan("rpgan"), [0, 1], steps=2)
    # A relativistic loss is blind to a constant added to D's output, so the true
    # gradient of D's last bias is exactly 0 and Adam turns its rounding noise into
    # full-size steps: compare members of a D without that bias.
    D = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1, bias=False))
    assert_vmap_equivalent(ganfn.GAN(small_gan_modules()[0], D, latent_dim=3, loss="ragan"), [0, 1], steps=2)
