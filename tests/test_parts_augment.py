"""The DiffAugment and ADA parts inside a GAN step: what D and G see, purity,
vmap, ADA's p in the state, and no augmentation in samples."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import augment, models, parts
from ganfn.state import Noise, UpdateNoise
from ganfn.testing import assert_pure, assert_trees_equal, assert_vmap_equivalent

torch.set_num_threads(1)
B = 6
POLICY = "color,translation,cutout"


def _gan(*ps, loss="non_saturating", **kw):
    G = models.DCGANGenerator(4, size=8, channels=1, width=4, norm="none")
    D = models.DCGANDiscriminator(size=8, channels=1, width=4, norm="none")
    return ganfn.GAN(G, D, latent_dim=4, loss=loss, parts=list(ps), **kw)


def _real(seed=0, n=B):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 50)) * 2 - 1


def _without(noise: Noise, name: str) -> Noise:
    drop = lambda u: UpdateNoise(u.z, {k: v for k, v in u.parts.items() if k != name})
    return Noise(drop(noise.d), drop(noise.g))


@pytest.mark.parametrize("make", [lambda: parts.diffaugment(POLICY, p=0.0), lambda: parts.ada(POLICY, p=0.0)],
                         ids=["diffaugment", "ada"])
def test_p_zero_is_the_unaugmented_step_bit_for_bit(make):
    aug, plain = _gan(make()), _gan()
    state, real = aug.init(0), _real()
    noise = aug.draw_noise(torch.Generator().manual_seed(1), B)
    a, ma = aug.train_step(state, real, noise)
    b, mb = plain.train_step(plain.init(0), real, _without(noise, aug.parts[0].name))
    assert_trees_equal((a.g, a.d), (b.g, b.d), "augmented at p=0 vs plain")
    for k in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
        assert torch.equal(ma[k], mb[k]), k


def test_d_sees_augmented_real_and_fake_and_g_trains_through_augmentation():
    gan = _gan(parts.diffaugment("translation,cutout"))
    state, real = gan.init(0), _real()
    noise = gan.draw_noise(torch.Generator().manual_seed(1), B)
    nd = ganfn.tree_index(noise.d, 0)
    _, _, aux = gan.d_grads(state, real, nd)
    # D's loss equals the loss on explicitly augmented batches.
    mine = nd.parts["diffaugment"]
    side = lambda s: {k.split("/", 1)[1]: v for k, v in mine.items() if k.startswith(s + "/")}
    r = augment.apply(real, side("real"), "translation,cutout")
    f = augment.apply(aux.fake, side("fake"), "translation,cutout")
    out = gan.d_apply(state.d.params, state.d.buffers, torch.cat([r, f]))[0]
    torch.testing.assert_close(aux.d_loss_real + aux.d_loss_fake, gan.loss.d(out[:B], out[B:]))
    # G's gradient depends on the augmentation of its fakes (it flows through it).
    ng = ganfn.tree_index(noise.g, 0)
    _, g1, _ = gan.g_grads(state, ng)
    _, g0, _ = gan.g_grads(gan.init(0, augment_p=0.0), ng)
    assert any(not torch.equal(g1[k], g0[k]) for k in g1)
    assert all(torch.isfinite(v).all() for v in g1.values())


def test_augmented_step_is_pure_and_vmapped_members_equal_single_runs():
    gan = _gan(parts.diffaugment(POLICY))
    state, real = gan.init(0), _real()
    assert_pure(gan.train_step, state, real, gan.draw_noise(torch.Generator().manual_seed(1), B))
    data = lambda n, g: torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    assert_vmap_equivalent(gan, [0, 1, 2], steps=2, batch_size=B, data=data,
                           hparams=[{"augment_p": 0.0}, {"augment_p": 0.5}, {}])
    assert_vmap_equivalent(_gan(parts.ada(POLICY, interval=1, speed_images=50.0)), [0, 1], steps=3, batch_size=B,
                           data=data, hparams=[{"ada_target": 0.0}, {"ada_target": 0.9}])


def _train(gan, state, real, steps, seed=1):
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        state, _ = gan.train_step(state, real, gan.draw_noise(rng, real.shape[0]))
    return state


def test_ada_p_rises_when_d_overfits_a_tiny_training_set():
    """D learns 6 fixed images against a frozen G (lr_g = 0): it calls every real
    image real (r_t -> 1 > 0.6), which is overfitting, and ADA raises p."""
    gan = _gan(parts.ada("translation", interval=2, speed_images=60.0),
               d_optimizer=ganfn.optim.adam(1e-2, (0.5, 0.99)), g_optimizer=ganfn.optim.adam(0.0, (0.5, 0.99)))
    state = _train(gan, gan.init(0), _real(), 40)
    assert float(state.parts["ada"]["rt"]) > 0.6
    assert float(state.parts["ada"]["p"]) > 0.5


def test_ada_p_falls_when_d_does_not_overfit():
    """A D that judges every real image fake (r_t = -1 < 0.6) and never learns
    (lr_d = 0): p falls from 0.5 to 0 and stays there."""
    gan = _gan(parts.ada("translation", interval=2, speed_images=60.0, p=0.5),
               d_optimizer=ganfn.optim.adam(0.0, (0.5, 0.99)))
    state = gan.init(0)
    last = [k for k in state.d.params if k.endswith("bias")][-1]
    state = state._replace(d=state.d._replace(params={**state.d.params,
                                                      last: torch.full_like(state.d.params[last], -50.0)}))
    p = [float(state.parts["ada"]["p"])]
    for i in range(3):
        state = _train(gan, state, _real(), 2, seed=i)
        p.append(float(state.parts["ada"]["p"]))
    assert p == pytest.approx([0.5, 0.3, 0.1, 0.0])  # 2 updates x 6 images / 60 per adjustment, clamped at 0
    assert float(state.parts["ada"]["rt"]) == -1.0


@settings(max_examples=5)
@given(st.sampled_from(["diffaugment", "ada"]), st.integers(0, 1000))
def test_no_augmentation_reaches_samples(kind, seed):
    """Samples are G's plain output: neither translated nor cut out, whatever the
    training did."""
    part = parts.diffaugment("translation,cutout") if kind == "diffaugment" else parts.ada("translation,cutout", p=1.0)
    gan = _gan(part)
    state = _train(gan, gan.init(seed % 7), _real(seed), 3, seed=seed)
    z = gan.draw_latents(torch.Generator().manual_seed(seed), 16)
    raw = gan.g_apply(state.g.params, state.g.buffers, z, train=False)[0]
    assert torch.equal(gan.sample(state, z), raw)
    # and the training did use the augmentation (p = 1): it is the hooks, not a no-op part, that sampling skips
    assert float(state.hparams["augment_p"] if kind == "diffaugment" else state.parts["ada"]["p"]) == 1.0


def test_part_errors():
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parts.diffaugment("flip")
    with pytest.raises(ValueError, match="augment_p"):
        _gan(parts.diffaugment(p=1.5))
    with pytest.raises(ValueError, match="interval"):
        parts.ada(interval=0)
    with pytest.raises(ValueError, match="initial p"):
        parts.ada(p=2.0)
    gan = _gan(parts.diffaugment())
    with pytest.raises(ValueError, match="augment_p"):
        gan.init(0, augment_p=-0.1)


def test_ada_state_checkpoints_and_resumes_bit_identically(tmp_path):
    from ganfn.loop import fit

    gan = _gan(parts.ada("translation", interval=1, speed_images=100.0, p=0.5))
    images = lambda n, g: torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    kw = dict(steps=4, batch_size=B, log_every=1, checkpoint_every=None, seed=3, progress=False,
              print_fn=lambda s: None)
    full, _ = fit(gan, images, run_dir=tmp_path / "full", **kw)
    fit(gan, images, run_dir=tmp_path / "half", **{**kw, "steps": 2})
    resumed, _ = fit(gan, images, run_dir=tmp_path / "half", resume=True, **kw)
    assert_trees_equal(full, resumed, "resumed vs uninterrupted state")
    assert float(resumed.parts["ada"]["p"]) != 0.5  # it moved, and the move was checkpointed


@pytest.mark.parametrize("make", [lambda: parts.diffaugment(POLICY), lambda: parts.ada(POLICY, p=0.5)],
                         ids=["diffaugment", "ada"])
def test_augmentation_in_a_conditional_gan_keeps_the_labels(make):
    # D scores the augmented images with their own labels (real labels with real
    # images, the drawn fake labels with fakes); the step stays pure and each
    # vmapped member equals its single run.
    K = 3
    G = models.CondDCGANGenerator(4, K, 8, 1, 4)
    D = models.ProjectionDiscriminator(8, 1, 4, K)
    D.wants_spectral_norm = False  # this test trains the projection D without spectral norm
    gan = ganfn.GAN(G, D, latent_dim=4, num_classes=K, loss="hinge", parts=[make()])
    g = torch.Generator().manual_seed(3)
    real = (torch.rand(B, 1, 8, 8, generator=g) * 2 - 1, torch.randint(K, (B,), generator=g))
    state, noise = gan.init(0), gan.draw_noise(torch.Generator().manual_seed(1), B)
    nd = ganfn.tree_index(noise.d, 0)
    _, _, aux = gan.d_grads(state, real, nd)
    name = gan.parts[0].name
    mine = nd.parts[name]
    side = lambda s: {k.split("/", 1)[1]: v for k, v in mine.items() if k.startswith(s + "/")}
    p = state.hparams["augment_p"] if name == "diffaugment" else state.parts[name]["p"]
    r = augment.apply(real[0], side("real"), POLICY, p=p)
    f = augment.apply(aux.fake, side("fake"), POLICY, p=p)
    out_r = gan.d_apply(state.d.params, state.d.buffers, r, real[1])[0]
    out_f = gan.d_apply(state.d.params, state.d.buffers, f, nd.labels[0])[0]
    torch.testing.assert_close(aux.d_loss_real + aux.d_loss_fake, gan.loss.d(out_r, out_f))
    # the wrong labels give another loss: the check above can fail
    wrong = gan.d_apply(state.d.params, state.d.buffers, r, (real[1] + 1) % K)[0]
    assert not torch.allclose(gan.loss.d(wrong, out_f), gan.loss.d(out_r, out_f))
    assert_pure(gan.train_step, state, real, noise)
    assert_vmap_equivalent(gan, [0, 1], steps=2)
