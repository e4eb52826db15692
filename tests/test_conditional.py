"""Class-conditional GANs through the core: labels in the data and the noise,
G(z, y) and D(x, y), and every property of the step kept (purity, isolation,
vmap == single runs, accumulation, n_critic, penalties on images only), plus
the errors for bad labels and networks that do not take them."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import data as gdata
from ganfn import losses, models, penalties, recipes
from ganfn.testing import (
    assert_accumulation_equivalent,
    assert_grads_isolated,
    assert_pure,
    assert_trees_close,
    assert_vmap_equivalent,
)
from ganfn.testing import strategies as gst
from ganfn.tree import tree_index

torch.set_num_threads(1)
K = 4
FEW = settings(max_examples=6, deadline=None)


def _pens(penalty) -> list:
    return [] if penalty is None else [penalties.get(penalty)]


def cond_gan(k: int = K, penalty=None, ema: float | None = None, **kw) -> ganfn.GAN:
    G = models.CondMLPGenerator(3, 2, k, 16, 2, out_act=None)
    D = models.CondMLPDiscriminator(2, k, 16, 2)
    return ganfn.GAN(G, D, latent_dim=3, num_classes=k, parts=recipes.classic(penalties=_pens(penalty), ema_decay=ema),
                     **kw)


def proj_gan(sn: bool = True, penalty=None, ema: float | None = None, **kw) -> ganfn.GAN:
    G = models.CondDCGANGenerator(4, K, 8, 1, 4)
    D = models.ProjectionDiscriminator(8, 1, 4, K)
    D.wants_spectral_norm = sn
    parts = recipes.classic(penalties=_pens(penalty), spectral_norm=sn, ema_decay=ema)
    return ganfn.GAN(G, D, latent_dim=4, num_classes=K, parts=parts, **kw)


def batch(gan: ganfn.GAN, B: int, seed: int = 0, lead: int | None = None):
    g = torch.Generator().manual_seed(seed)
    n = B * (lead or 1)
    x, y = torch.randn(n, *gan.sample_shape, generator=g), torch.randint(gan.num_classes, (n,), generator=g)
    if lead:
        return x.reshape(lead, B, *x.shape[1:]), y.reshape(lead, B)
    return x, y


# -- the contract -------------------------------------------------------------------------


def test_noise_carries_the_fake_labels_and_unconditional_noise_is_unchanged():
    gan = cond_gan(n_critic=3, n_gen=2)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), 5)
    (yd,), (yg,) = noise.d.labels, noise.g.labels
    assert yd.shape == (3, 5) and yg.shape == (2, 5) and yd.dtype == torch.int64
    assert int(yd.max()) < K and int(yd.min()) >= 0
    # The labels are drawn after the latents: the latents equal an unconditional GAN's.
    G, D = nn.Sequential(nn.Linear(3, 2)), nn.Sequential(nn.Linear(2, 1))
    plain = ganfn.GAN(G, D, latent_dim=3, n_critic=3, n_gen=2).draw_noise(torch.Generator().manual_seed(0), 5)
    assert torch.equal(plain.d.z, noise.d.z) and plain.d.labels == ()


def test_class_frequencies_shape_the_fake_labels():
    gan = cond_gan(class_probs=[0.0, 1.0, 0.0, 3.0])
    y = gan.draw_noise(torch.Generator().manual_seed(0), 2000).d.labels[0]
    counts = torch.bincount(y.flatten(), minlength=K)
    assert counts[0] == counts[2] == 0 and 0.7 < float(counts[3]) / y.numel() < 0.8


def test_sample_takes_the_classes():
    gan = proj_gan()
    state = gan.init(0)
    z = gan.draw_latents(torch.Generator().manual_seed(1), 6)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    x = gan.sample(state, z, y)
    assert x.shape == (6, 1, 8, 8)
    # conditional batch norm starts class-independent (gain 1, shift 0): give class 1 its own shift
    state.g.params["norms.0.shift"][1] += 1.0
    x1 = gan.sample(state, z, torch.ones(6, dtype=torch.int64))
    assert not torch.allclose(x1, gan.sample(state, z, torch.zeros(6, dtype=torch.int64)))
    with pytest.raises(ValueError, match="conditional.*pass the classes"):
        gan.sample(state, z)
    with pytest.raises(ValueError, match="values in"):
        gan.sample(state, z, y + 4)


@pytest.mark.parametrize("make", [cond_gan, proj_gan])
def test_step_is_pure_and_isolated(make):
    gan = make(penalty="r1", ema=0.9)
    state = gan.init(0)
    real = batch(gan, 6)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), 6)
    assert_pure(gan.train_step, state, real, noise, modules=[gan.generator, gan.discriminator])
    assert_grads_isolated(gan, state, real, noise)


@given(seed=st.integers(0, 100), ncrit=st.integers(1, 3), penalty=st.sampled_from([None, "gp", "r1", "r2"]))
@FEW
def test_conditional_ensemble_equals_its_single_runs(seed, ncrit, penalty):
    gan = cond_gan(n_critic=ncrit, penalty=penalty, ema=0.9)
    # float32 double backward (gp) under vmap reorders sums: agreement to ~1e-5 absolute
    assert_vmap_equivalent(gan, [seed, seed + 1, seed + 2], steps=2, batch_size=4,
                           hparams=[{"lr_d": 1e-3}, {"lr_d": 2e-4}, {}], atol=1e-4)


@given(real=gst.labelled_batches((2,), K, batch_size=8), seed=st.integers(0, 50))
@FEW
def test_accumulation_equals_the_full_batch_over_random_labels(real, seed):
    gan = cond_gan(penalty="gp")
    assert_accumulation_equivalent(gan, gan.init(seed), real, 4)


def test_n_critic_batches_each_use_their_own_labels():
    gan = cond_gan(n_critic=2)
    state = gan.init(0)
    x, y = batch(gan, 5, lead=2)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), 5)
    new, m = gan.train_step(state, (x, y), noise)
    # By hand: two D updates on (x[i], y[i]) with noise.d[i], then the G update.
    s = state
    for i in range(2):
        _, grads, aux = gan.d_grads(s, (x[i], y[i]), tree_index(noise.d, i))
        s = gan.d_update(s, grads, aux)
    _, grads, aux = gan.g_grads(s, tree_index(noise.g, 0))
    s = gan.g_update(s, grads, aux)
    assert_trees_close(s.g.params, new.g.params, "G params", rtol=0, atol=0)
    assert_trees_close(s.d.params, new.d.params, "D params", rtol=0, atol=0)
    # Changing the second batch's labels changes the result: they are used.
    other, _ = gan.train_step(state, (x, torch.stack([y[0], (y[1] + 1) % K])), noise)
    assert not torch.equal(other.d.params["net.0.weight"], new.d.params["net.0.weight"])


@pytest.mark.parametrize("name, side", [("r1", "real"), ("gp", "real"), ("r2", "fake")])
def test_penalties_differentiate_images_only_with_the_right_labels(name, side):
    gan = proj_gan(sn=False, penalty=penalties.get(name, 1.0))
    state = gan.init(0)
    x, y = batch(gan, 4)
    nd = tree_index(gan.draw_noise(torch.Generator().manual_seed(1), 4).d, 0)
    _, _, aux = gan.d_grads(state, (x, y), nd)
    params = state.d.params
    from ganfn.functional import make_apply

    apply = make_apply(gan.discriminator)
    with torch.no_grad():
        fake = gan.sample(state, nd.z, nd.labels[0], ema=False, train=True)
    labels = y if side == "real" else nd.labels[0]
    pts = {"real": x, "fake": fake}[side]
    if name == "gp":
        e = nd.parts["gp"]["eps"].reshape(-1, 1, 1, 1)
        pts = e * x + (1 - e) * fake
    def value(lab):
        g = torch.func.grad(lambda inp: apply(params, state.d.buffers, inp, lab)[0].sum())(pts)
        norms = (g.flatten(1).square().sum(1) + 1e-12).sqrt()
        return float(((norms - 1) ** 2).mean() if name == "gp" else 0.5 * norms.square().mean())

    assert float(aux.penalty) == pytest.approx(value(labels), rel=1e-4)
    # the other side's labels give another value: the test tells them apart
    assert float(aux.penalty) != pytest.approx(value(nd.labels[0] if side == "real" else y), rel=1e-3)


def test_acgan_loss_through_the_step():
    G = models.CondDCGANGenerator(4, K, 8, 1, 4)
    D = models.ACGANDiscriminator(8, 1, 4, K)
    gan = ganfn.GAN(G, D, latent_dim=4, num_classes=K, loss=losses.acgan("hinge", 1.0, 0.5),
                    parts=recipes.classic(penalties=[penalties.r1()], spectral_norm=True))
    state = gan.init(0, acgan_d_weight=2.0)
    assert float(state.hparams["acgan_d_weight"]) == 2.0
    new, m = gan.train_step(state, batch(gan, 6), gan.draw_noise(torch.Generator().manual_seed(0), 6))
    assert all(torch.isfinite(v).all() for v in m.values())
    assert not torch.equal(new.d.params["classifier.weight"], state.d.params["classifier.weight"])


# -- errors before any state changes ------------------------------------------------------


def test_bad_labels_are_refused_before_the_step():
    gan = cond_gan()
    state = gan.init(0)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), 4)
    x, y = batch(gan, 4)
    with pytest.raises(ValueError, match=r"real labels has values in \[.*num_classes=4"):
        gan.train_step(state, (x, y + K), noise)
    with pytest.raises(ValueError, match=r"values in \[-1"):
        gan.train_step(state, (x, y - 1), noise)
    with pytest.raises(TypeError, match="float32.*long"):
        gan.train_step(state, (x, y.float()), noise)
    with pytest.raises(ValueError, match=r"shape \[4\]"):
        gan.train_step(state, (x, y[:3]), noise)
    with pytest.raises(TypeError, match=r"\(images, labels\) pair, got a tensor"):
        gan.train_step(state, x, noise)
    plain = ganfn.GAN(nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 1)), latent_dim=3)
    with pytest.raises(TypeError, match="unconditional.*pair"):
        plain.train_step(plain.init(0), (x, y), plain.draw_noise(torch.Generator().manual_seed(0), 4))
    with pytest.raises(ValueError, match="different conditioning"):
        gan.train_step(state, (x, y), plain.draw_noise(torch.Generator().manual_seed(0), 4))


def test_networks_that_do_not_take_labels_are_refused_at_init():
    G, D = nn.Sequential(nn.Linear(3, 2)), nn.Sequential(nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"generator cannot take.*conditional \(num_classes=4\).*G\(z, y\)"):
        ganfn.GAN(G, models.CondMLPDiscriminator(2, K), latent_dim=3, num_classes=K).init(0)
    with pytest.raises(ValueError, match=r"discriminator cannot take.*D\(x, y\)"):
        ganfn.GAN(models.CondMLPGenerator(3, 2, K), D, latent_dim=3, num_classes=K).init(0)
    with pytest.raises(ValueError, match="unconditional.*num_classes=K"):
        ganfn.GAN(models.CondMLPGenerator(3, 2, K), D, latent_dim=3).init(0)


def test_bad_conditional_setups_are_refused():
    G, D = models.CondMLPGenerator(3, 2, K), models.CondMLPDiscriminator(2, K)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        ganfn.GAN(G, D, latent_dim=3, num_classes=1)
    with pytest.raises(ValueError, match="class_probs"):
        ganfn.GAN(G, D, latent_dim=3, num_classes=K, class_probs=[1.0, 2.0])
    with pytest.raises(ValueError, match="acgan.*num_classes"):
        ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="acgan")
    with pytest.raises(ValueError, match="replay.*labels"):
        ganfn.GAN(G, D, latent_dim=3, num_classes=K, parts=[ganfn.parts.replay(8)])
    with pytest.raises(ValueError, match="losses.acgan"):
        ganfn.GAN(models.CondDCGANGenerator(4, K, 8, 1, 4), models.ACGANDiscriminator(8, 1, 4, K), latent_dim=4,
                  num_classes=K, parts=[ganfn.parts.spectral_norm()]).init(0)


# -- a conditional ring run -------------------------------------------------------------------


@pytest.mark.slow
def test_conditional_ring_samples_of_class_k_land_on_mode_k():
    G = models.CondMLPGenerator(4, 2, 8, 128, 2, out_act=None, generator=torch.Generator().manual_seed(0))
    D = models.CondMLPDiscriminator(2, 8, 128, 2, generator=torch.Generator().manual_seed(1))
    gan = ganfn.GAN(G, D, latent_dim=4, num_classes=8, loss="hinge", parts=[penalties.r1(0.1), ganfn.parts.ema(0.99)],
                    g_optimizer=ganfn.optim.adam(2e-3, (0.5, 0.9)), d_optimizer=ganfn.optim.adam(2e-3, (0.5, 0.9)))
    state = gan.init(0)
    rng, data_rng = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(1500):
        state, _ = gan.train_step(state, gdata.ring8(128, data_rng, labels=True), gan.draw_noise(rng, 128))
    y = torch.arange(8).repeat_interleave(200)
    x = gan.sample(state, gan.draw_latents(torch.Generator().manual_seed(2), len(y)), y)
    centers = gdata.ring8_centers()
    nearest = torch.cdist(x, centers).argmin(1)
    on_mode = (nearest == y).double().mean()
    close = ((x - centers[y]).norm(dim=1) < 10 * gdata.RING8_STD).double().mean()
    assert on_mode > 0.95, f"only {float(on_mode):.0%} of class-k samples are nearest mode k"
    assert close > 0.8, f"only {float(close):.0%} of class-k samples lie within 10 std of mode k"


# -- the training loop: checkpoints, pictures -------------------------------------------------------


@pytest.mark.parametrize("stacked", [False, True])
def test_conditional_resume_is_bit_identical(tmp_path, stacked):
    from ganfn.loop import Evaluator, fit
    from ganfn.testing import assert_trees_equal

    x, y = gdata.digits("train", 8, labels=True)
    y = y % K  # four classes
    gan = proj_gan(penalty="r1", ema=0.9, n_critic=2)
    ev = Evaluator(lambda s, lab: {"m": float(s.mean()), "classes": float(lab.double().mean())}, "m", n_samples=16)
    kw = dict(steps=6, batch_size=100, log_every=1, eval_every=3, evaluator=ev, progress=False, checkpoint_every=None)
    kw.update(seeds=[3, 4], hparams=[{"lr_d": 1e-3}, {"lr_d": 3e-4}]) if stacked else kw.update(seed=3)
    full, hist = fit(gan, (x, y), run_dir=tmp_path / "full", **kw)
    fit(gan, (x, y), run_dir=tmp_path / "half", **{**kw, "steps": 3})
    resumed, _ = fit(gan, (x, y), run_dir=tmp_path / "half", resume=True, **kw)
    assert_trees_equal(full, resumed, "resumed state")
    # the evaluator saw every class equally often: 4 samples of each of the 4 classes (mean label 1.5)
    assert hist["eval"][0]["figures"][0]["classes"] == pytest.approx(1.5)
    other, _ = fit(gan, (x, (y + 1) % K), run_dir=tmp_path / "other", **kw)  # other labels, other result
    with pytest.raises(AssertionError):
        assert_trees_equal(full, other, "state")
