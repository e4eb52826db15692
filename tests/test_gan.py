"""ganfn.GAN: purity, isolation, accumulation, both differentiation paths, step semantics, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import small_gan_modules
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import losses, optim, parts, penalties, recipes
from ganfn.testing import (
    assert_accumulation_equivalent,
    assert_grads_isolated,
    assert_pure,
    assert_trees_close,
    assert_trees_equal,
    assert_vmap_equivalent,
)
from ganfn.testing import strategies as gst

torch.set_num_threads(1)
B = 8

CONFIGS = {
    "plain": {},
    "wgan_gp_ema": dict(loss="wasserstein", parts=recipes.wgan_gp(ema_decay=0.9)),
    "hinge_sn_r1": dict(loss="hinge", parts=[penalties.r1(), parts.spectral_norm()]),
    "lsgan_smooth_r2": dict(loss=losses.with_targets("least_squares", real_label=0.9), parts=[penalties.r2(1.0)]),
    "wgan_clip_ncritic2": dict(loss="wasserstein", parts=recipes.wgan(0.01), n_critic=2, n_gen=2,
                               d_optimizer=optim.rmsprop(5e-3), g_optimizer=optim.rmsprop(5e-3)),
    "replay_instnoise": dict(parts=[parts.instance_noise(0.1), parts.replay(16)]),
    "accumulate2": dict(accumulation_steps=2, parts=recipes.wgan_gp(), loss="wasserstein"),
    "g_batchnorm": dict(g_batchnorm=True),
    "skip_balance": dict(parts=[parts.balance(0.6, 0.4)]),
}


def make(name: str = "plain", dtype: torch.dtype = torch.float32, **over):
    kw = {**CONFIGS[name], **over}
    g_bn = kw.pop("g_batchnorm", False)
    G, D = small_gan_modules(g_batchnorm=g_bn)
    return ganfn.GAN(G.to(dtype), D.to(dtype), latent_dim=3, **kw)


def real_batch(gan, seed=0, batch=B, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + 1000)
    shape = (batch, 2) if gan.n_critic == 1 else (gan.n_critic, batch, 2)
    return torch.randn(*shape, generator=g, dtype=dtype)


def setup(gan, seed=0, batch=B):
    return gan.init(seed), real_batch(gan, seed, batch), gan.draw_noise(torch.Generator().manual_seed(seed), batch)


GANS = {name: make(name) for name in CONFIGS}


# -- purity ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_public_function_is_pure(name):
    gan = GANS[name]
    state, real, noise = setup(gan)
    r0 = real if gan.n_critic == 1 else real[0]
    nd, ng = ganfn.tree_index(noise.d, 0), ganfn.tree_index(noise.g, 0)
    rng_before = torch.random.get_rng_state()
    assert_pure(gan.init, 3)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "init must not consume the global RNG"
    loss, grads, aux = assert_pure(gan.d_grads, state, r0, nd)
    new = assert_pure(gan.d_update, state, grads, aux)
    loss, grads, aux = assert_pure(gan.g_grads, new, ng)
    assert_pure(gan.g_update, new, grads, aux)
    after, _ = assert_pure(gan.train_step, state, real, noise)
    z = gan.draw_latents(torch.Generator().manual_seed(5), 4)
    assert_pure(gan.sample, after, z)
    assert_pure(lambda s: gan.draw_noise(torch.Generator().manual_seed(s), B), 7)
    for m in (gan.generator, gan.discriminator):
        assert all(p.grad is None for p in m.parameters())


_PURE_GAN = GANS["wgan_gp_ema"]


@given(gst.train_states(_PURE_GAN, lr_d=gst.learning_rates(), gp_weight=gst.penalty_weights()),
       gst.batches((2,), batch_size=B, scale=st.floats(0.1, 100.0)), gst.seeds())
def test_train_step_pure_on_generated_states_and_data(state, real, seed):
    noise = _PURE_GAN.draw_noise(torch.Generator().manual_seed(seed), B)
    assert_pure(_PURE_GAN.train_step, state, real, noise)


# -- isolation -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grads_isolated_and_keys_are_one_network(name):
    gan = GANS[name]
    state, real, noise = setup(gan)
    assert_grads_isolated(gan, state, real, noise)
    _, dg, _ = gan.d_grads(state, real if gan.n_critic == 1 else real[0], ganfn.tree_index(noise.d, 0))
    _, gg, _ = gan.g_grads(state, ganfn.tree_index(noise.g, 0))
    assert list(dg) == [k for k, _ in gan.discriminator.named_parameters()]
    assert list(gg) == [k for k, _ in gan.generator.named_parameters()]


# -- accumulation -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "wgan_gp_ema", "hinge_sn_r1", "lsgan_smooth_r2", "replay_instnoise"])
@given(k=st.sampled_from([2, 4]), seed=gst.seeds(1000))
def test_accumulation_equals_full_batch(name, k, seed):
    # float64: micro-batch sums round differently from full-batch sums, and in
    # float32 that rounding (~1e-6 through spectral norm) hides real errors.
    gan = make(name, dtype=torch.float64)
    state = gan.init(seed)
    real = real_batch(gan, seed, dtype=torch.float64)
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B, dtype=torch.float64)
    assert_accumulation_equivalent(gan, state, real, k, noise=noise, rtol=1e-9, atol=1e-12)


# -- autograd path vs torch.func path --------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "wgan_gp_ema", "hinge_sn_r1", "g_batchnorm"])
def test_autograd_path_equals_torch_func_path(name):
    """Outside transforms d_grads/g_grads use autograd.grad; inside vmap, torch.func.grad_and_value."""
    gan = GANS[name]
    state, real, noise = setup(gan)
    nd, ng = ganfn.tree_index(noise.d, 0), ganfn.tree_index(noise.g, 0)
    one = lambda t: ganfn.stack([t])  # a stack of one member
    d_out = gan.d_grads(state, real, nd)
    d_vm = torch.func.vmap(gan.d_grads)(one(state), one(real), one(nd))
    assert_trees_close(d_out[:2], ganfn.unstack(d_vm[:2])[0], "d_grads autograd vs torch.func", rtol=1e-5, atol=1e-7)
    g_out = gan.g_grads(state, ng)
    g_vm = torch.func.vmap(gan.g_grads)(one(state), one(ng))
    assert_trees_close(g_out, ganfn.unstack(g_vm)[0], "g_grads autograd vs torch.func", rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["plain", "wgan_gp_ema", "hinge_sn_r1", "wgan_clip_ncritic2",
                                  "replay_instnoise", "g_batchnorm"])
def test_vmapped_runs_equal_single_runs(name):
    assert_vmap_equivalent(GANS[name], [0, 1, 2], steps=2)


def test_vmapped_sweep_with_per_member_hyperparameters():
    gan = GANS["wgan_gp_ema"]
    hps = [dict(lr_d=1e-3, gp_weight=1.0), dict(lr_d=1e-2, gp_weight=10.0, ema_decay=0.5)]
    assert_vmap_equivalent(gan, [0, 0], steps=2, hparams=hps)


# -- agreement with a hand-written imperative loop -------------------------------------------


def test_train_step_equals_imperative_pytorch_loop():
    torch.manual_seed(0)
    G, D = small_gan_modules()
    G, D = G.double(), D.double()
    gan = ganfn.GAN(G, D, latent_dim=3, g_optimizer=optim.adam(1e-2, (0.5, 0.999)),
                    d_optimizer=optim.adam(1e-2, (0.5, 0.999)), loss=losses.bce(real_label=0.9))
    state = gan.init(0, reinit=False)
    rng = torch.Generator().manual_seed(0)
    Gi, Di = copy.deepcopy(G), copy.deepcopy(D)
    og = torch.optim.Adam(Gi.parameters(), 1e-2, betas=(0.5, 0.999))
    od = torch.optim.Adam(Di.parameters(), 1e-2, betas=(0.5, 0.999))
    for step in range(3):
        real = torch.randn(B, 2, generator=rng, dtype=torch.float64)
        noise = gan.draw_noise(rng, B, dtype=torch.float64)
        state, m = gan.train_step(state, real, noise)
        od.zero_grad()
        fake = Gi(noise.d.z[0]).detach()
        lr_, lf_ = Di(real).squeeze(1), Di(fake).squeeze(1)
        d_loss = (F.binary_cross_entropy_with_logits(lr_, torch.full_like(lr_, 0.9))
                  + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_)))
        d_loss.backward()
        od.step()
        og.zero_grad()
        out = Di(Gi(noise.g.z[0])).squeeze(1)
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        g_loss.backward()
        og.step()
        assert m["d_loss"].item() == pytest.approx(d_loss.item(), rel=1e-10)
        assert m["g_loss"].item() == pytest.approx(g_loss.item(), rel=1e-10)
        assert_trees_close(state.d.params, dict(Di.named_parameters()), f"D after step {step}", rtol=1e-9, atol=1e-12)
        assert_trees_close(state.g.params, dict(Gi.named_parameters()), f"G after step {step}", rtol=1e-9, atol=1e-12)


# -- step semantics ------------------------------------------------------------------------------


def _d_then_g(gan, state, reals, noise):
    for i, r in enumerate(reals):
        state = gan.d_update(state, *gan.d_grads(state, r, ganfn.tree_index(noise.d, i))[1:])
    for j in range(gan.n_gen):
        state = gan.g_update(state, *gan.g_grads(state, ganfn.tree_index(noise.g, j))[1:])
    return state


def test_n_critic_uses_real_i_for_update_i_and_n_gen_updates():
    gan = make("plain", n_critic=3, n_gen=2)
    state, real, noise = setup(gan)
    got, _ = gan.train_step(state, real, noise)
    want = _d_then_g(gan, state, [real[0], real[1], real[2]], noise)
    assert_trees_equal(got._replace(step=got.step - 1), want, "train_step vs manual D/G updates")
    swapped = _d_then_g(gan, state, [real[1], real[0], real[2]], noise)
    with pytest.raises(AssertionError):
        assert_trees_close(got.d.params, swapped.d.params)
    assert got.d.opt["count"].item() == 3 and got.g.opt["count"].item() == 2 and got.step.item() == 1


# The EMA rule with a constant decay: the part without its warm-up.
_EMA_NO_WARMUP = make("plain", loss="wasserstein", parts=[*recipes.wgan_gp(), ganfn.parts.ema(0.9, warmup=False)])


@given(st.floats(0.0, 0.999), gst.seeds(1000))
def test_ema_follows_its_formula(decay, seed):
    gan = _EMA_NO_WARMUP
    state = gan.init(seed, ema_decay=decay)
    _, real, noise = setup(gan, seed)
    new, _ = gan.train_step(state, real, noise)
    for k, e in new.parts["ema"]["params"].items():
        torch.testing.assert_close(e, decay * state.parts["ema"]["params"][k] + (1 - decay) * new.g.params[k],
                                   rtol=1e-5, atol=1e-7)
    z = gan.draw_latents(torch.Generator().manual_seed(0), 4)
    assert torch.equal(gan.sample(new, z), gan.sample(new, z, ema=True))
    if decay > 0.01:  # a smaller decay rounds the EMA to the parameters themselves
        assert not torch.equal(gan.sample(new, z, ema=False), gan.sample(new, z, ema=True))


def test_replay_buffer_fills_and_feeds_old_samples_to_d():
    gan = make("plain", parts=[parts.replay(16, 0.5)])
    state, real, noise = setup(gan)
    assert state.parts["replay"]["count"].item() == 0
    nd = ganfn.tree_index(noise.d, 0)
    _, _, aux0 = gan.d_grads(state, real, nd)
    fresh = gan.g_apply(state.g.params, state.g.buffers, nd.z)[0]
    assert torch.equal(aux0.fake, fresh), "an empty buffer must not replace anything"
    s1, _ = gan.train_step(state, real, noise)
    assert s1.parts["replay"]["count"].item() == B
    assert torch.equal(s1.parts["replay"]["samples"][:B], aux0.fake)
    noise2 = gan.draw_noise(torch.Generator().manual_seed(9), B)
    nd2 = ganfn.tree_index(noise2.d, 0)
    _, _, aux = gan.d_grads(s1, real, nd2)
    idx = (nd2.parts["replay"]["u"] * B).long()
    assert torch.equal(aux.fake[: B // 2], s1.parts["replay"]["samples"][idx[: B // 2]])
    fresh2 = gan.g_apply(s1.g.params, s1.g.buffers, nd2.z)[0]
    assert torch.equal(aux.fake[B // 2:], fresh2[B // 2:])


def test_instance_noise_changes_d_inputs_and_zero_std_is_off():
    noisy, plain = make("plain", parts=[parts.instance_noise(0.5)]), make("plain")
    _, real, _ = setup(plain)
    noise = noisy.draw_noise(torch.Generator().manual_seed(0), B)
    nd = ganfn.tree_index(noise.d, 0)
    l_noisy, g_noisy, _ = noisy.d_grads(noisy.init(0), real, nd)
    l_off, g_off, _ = noisy.d_grads(noisy.init(0, instance_noise=0.0), real, nd)
    l_plain, g_plain, _ = plain.d_grads(plain.init(0), real, ganfn.UpdateNoise(nd.z))
    assert not torch.allclose(l_noisy, l_plain)
    assert_trees_close((l_off, g_off), (l_plain, g_plain), "instance_noise=0 vs no instance noise", rtol=1e-6,
                       atol=1e-7)


def test_d_skip_accuracy_freezes_d_and_g_skip_freezes_g():
    # The thresholds are per-member hyperparameters, so each setup's state carries its own.
    state, real, noise = setup(GANS["plain"])
    always = make("plain", parts=[parts.balance(d_above=0.0)])  # skip whenever accuracy > 0
    s, m = always.train_step(always.init(0), real, noise)
    if m["d_acc_real"] + m["d_acc_fake"] > 0:
        assert m["d_skipped"].item() == 1.0
        assert_trees_equal(s.d.params, state.d.params, "D params after a skipped update")
        assert_trees_equal(s.d.opt, state.d.opt, "D optimizer after a skipped update")
    never = make("plain", parts=[parts.balance(d_above=1.0)])
    s_never, m_never = never.train_step(never.init(0), real, noise)
    s_plain, _ = GANS["plain"].train_step(state, real, noise)
    assert m_never["d_skipped"].item() == 0.0
    assert float(s_never.hparams.pop("d_skip_accuracy")) == 1.0
    assert_trees_equal(s_never, s_plain, "d_skip_accuracy=1.0 vs no balancing")
    g_always = make("plain", parts=[parts.balance(g_below=1.0)])  # skip G whenever accuracy < 1
    s, m = g_always.train_step(g_always.init(0), real, noise)
    if (m["d_acc_real"] + m["d_acc_fake"]).item() < 2.0:
        assert m["g_skipped"].item() == 1.0
        assert_trees_equal(s.g.params, state.g.params, "G params after a skipped update")


def test_metrics_are_finite_scalars():
    for name, gan in GANS.items():
        state, real, noise = setup(gan)
        _, m = gan.train_step(state, real, noise)
        for k in ("d_loss", "d_loss_real", "d_loss_fake", "penalty", "g_loss", "d_acc_real", "d_acc_fake",
                  "d_grad_norm", "g_grad_norm", "lr_d", "lr_g"):
            assert m[k].dim() == 0 and torch.isfinite(m[k]), (name, k)
        ganfn.check_finite(m, 0)


def test_batchnorm_generator_buffers_advance_and_sample_uses_eval_mode():
    gan = GANS["g_batchnorm"]
    state, real, noise = setup(gan)
    new, _ = gan.train_step(state, real, noise)
    key = next(k for k in state.g.buffers if k.endswith("running_mean"))
    assert not torch.equal(new.g.buffers[key], state.g.buffers[key])
    z = gan.draw_latents(torch.Generator().manual_seed(0), 1)
    assert gan.sample(new, z).shape == (1, 2)  # a batch of 1 works in eval mode


# -- bad input ------------------------------------------------------------------------------------


def test_g_output_d_cannot_take():
    G = nn.Sequential(nn.Linear(3, 5))
    D = nn.Sequential(nn.Linear(2, 1))
    with pytest.raises(ValueError, match=r"discriminator cannot take the generator's output of shape \(2, 5\)"):
        ganfn.GAN(G, D, latent_dim=3).init(0)
    with pytest.raises(ValueError, match="generator cannot take latents"):
        ganfn.GAN(nn.Linear(4, 2), D, latent_dim=3).init(0)


def test_bad_step_inputs_raise_before_any_change():
    gan = GANS["plain"]
    state, real, noise = setup(gan)
    before = copy.deepcopy(state)
    cases = [
        (real[:6], ValueError, "real batch size 6 does not match the noise batch size 8"),
        (real.double(), TypeError, "dtype torch.float64 but the parameters are torch.float32"),
        (torch.empty(B, 2, device="meta"), ValueError, "real data is on meta"),
        (torch.randn(B, 3), ValueError, r"sample shape \(3,\) but the generator makes \(2,\)"),
        (torch.randn(2, B, 2), ValueError, "real must have shape"),
    ]
    for bad, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            gan.train_step(state, bad, noise)
    with pytest.raises(ValueError, match="different n_critic"):
        gan.train_step(state, real, GANS["wgan_clip_ncritic2"].draw_noise(torch.Generator(), B))
    with pytest.raises(ValueError, match="needs interpolation weights"):
        GANS["wgan_gp_ema"].train_step(GANS["wgan_gp_ema"].init(0), real, noise)
    with pytest.raises(ValueError, match="divisible by accumulation_steps"):
        GANS["accumulate2"].train_step(GANS["accumulate2"].init(0), real[:7],
                                       GANS["accumulate2"].draw_noise(torch.Generator(), 7))
    assert_trees_equal(state, before, "state after rejected calls")


@pytest.mark.parametrize("kw,msg", [
    (dict(lr_d=float("nan")), "lr_d"), (dict(lr_g=-1e-3), "lr_g"), (dict(gp_weight=float("inf")), "gp_weight"),
    (dict(lr_x=1.0), "unknown hyperparameter 'lr_x'"), (dict(momentum_d=0.9), "has no 'momentum'"),
])
def test_bad_hyperparameters_raise(kw, msg):
    with pytest.raises(ValueError, match=msg):
        GANS["wgan_gp_ema"].init(0, **kw)


def test_bad_construction_raises():
    G, D = small_gan_modules()
    for kw, msg in [(dict(loss="wgan_gpp"), "unknown loss 'wgan_gpp'"),
                    (dict(loss=losses.bce(real_label=float("nan"))), "real_label"),
                    (dict(n_critic=0), "n_critic"), (dict(parts=[parts.ema(1.5)]), "ema_decay"),
                    (dict(latent_dim=0), "latent_dim"), (dict(g_optimizer=torch.optim.Adam), "ganfn.optim.Optimizer"),
                    (dict(parts=["gp"]), "ganfn.parts.Part")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            ganfn.GAN(G, D, **{"latent_dim": 3, **kw})
    with pytest.raises(ValueError, match="lr"):
        optim.adam(-1.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        GANS["plain"].init(0.5)


def test_check_finite_reports_the_step():
    m = {"d_loss": torch.tensor(float("nan")), "g_loss": torch.tensor(1.0)}
    with pytest.raises(ganfn.NonFiniteLossError, match="step 7") as e:
        ganfn.check_finite(m, torch.tensor(7))
    assert e.value.step == 7 and "d_loss" in e.value.values
    stacked = {"d_loss": torch.tensor([1.0, 2.0]), "g_loss": torch.tensor([0.0, float("inf")])}
    with pytest.raises(ganfn.NonFiniteLossError, match=r"g_loss\[member 1\]=inf"):
        ganfn.check_finite(stacked, 3)
    ganfn.check_finite({"d_loss": torch.tensor(1.0)}, 0)


def test_divergence_is_reported_with_its_step():
    gan = make("plain", loss="wasserstein", d_optimizer=optim.sgd(1e30), g_optimizer=optim.sgd(1e30))
    state, _, _ = setup(gan)
    rng = torch.Generator().manual_seed(0)
    with pytest.raises(ganfn.NonFiniteLossError) as e:
        for _ in range(50):
            state, m = gan.train_step(state, torch.randn(B, 2, generator=rng) * 1e10, gan.draw_noise(rng, B))
            ganfn.check_finite(m, state.step - 1)
    assert 0 <= e.value.step < 50


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlp_gan_covers_ring8_modes():
    from ganfn.data import RING8_STD, ring8
    from ganfn.metrics import mode_coverage, ring8_centers

    G = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    D = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
    gan = ganfn.GAN(G, D, latent_dim=2, parts=[parts.ema(0.99)],
                    g_optimizer=optim.adam(1e-3, (0.5, 0.999)), d_optimizer=optim.adam(1e-3, (0.5, 0.999)))
    state = gan.init(0)
    noise_rng, data_rng = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    for _ in range(2000):
        state, m = gan.train_step(state, ring8(256, data_rng), gan.draw_noise(noise_rng, 256))
    ganfn.check_finite(m, state.step)
    samples = gan.sample(state, gan.draw_latents(torch.Generator().manual_seed(3), 2000))
    cov = mode_coverage(samples, ring8_centers(), RING8_STD)
    assert int(cov.modes) >= 7, f"covered {int(cov.modes)} of 8 modes; counts {cov.counts.tolist()}"


@pytest.mark.parametrize("opt,key", [(optim.sgd(0.1), "momentum_d"), (optim.adam(1e-3), "weight_decay_d"),
                                     (optim.rmsprop(1e-3), "momentum_d")])
def test_hyperparameter_fixed_at_zero_cannot_be_overridden_silently(opt, key):
    # A Python 0.0 removes that arithmetic from the update: overriding it in the
    # state would be silently ignored, so init refuses and says how to sweep it.
    gan = make("plain", d_optimizer=opt)
    with pytest.raises(ValueError, match="build it with a tensor"):
        gan.init(0, **{key: 0.5})
    gan.init(0, **{key: 0.0})  # the value it already has is fine


def test_weight_decay_built_as_tensor_is_sweepable():
    gan = make("plain", d_optimizer=optim.adam(1e-2, weight_decay=torch.tensor(0.0)))
    rng = torch.Generator().manual_seed(0)
    real, noise = real_batch(gan), gan.draw_noise(rng, B)
    a, _ = gan.train_step(gan.init(0), real, noise)
    b, _ = gan.train_step(gan.init(0, weight_decay_d=0.5), real, noise)
    assert any(not torch.equal(a.d.params[k], b.d.params[k]) for k in a.d.params)
