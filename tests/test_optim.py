"""ganfn.optim equals torch.optim over training loops (float64), schedules, clipping, tensor hyperparameters."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ganfn
from ganfn import optim, stack, unstack
from ganfn.testing import assert_pure, assert_trees_close, assert_trees_equal
from ganfn.testing import strategies as gst

TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}
STEPS = 6


def init_params(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(4, 3, generator=g, dtype=torch.float64),
            "b": torch.randn(3, generator=g, dtype=torch.float64)}


def loss_fn(p: dict[str, torch.Tensor], step: int) -> torch.Tensor:
    # Non-quadratic and step-dependent, so trajectories depend on every update.
    x = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4) * (1 + 0.1 * step)
    return torch.sum(torch.tanh(x @ p["w"] + p["b"]) ** 2) + 0.1 * torch.sum(p["w"] ** 4)


def ganfn_ctor(name: str, hp: dict, **extra):
    hp = dict(hp)
    if name == "sgd":
        return optim.sgd(hp.pop("lr"), hp.pop("momentum"), **hp, **extra)
    if name == "rmsprop":
        return optim.rmsprop(**hp, **extra)
    return getattr(optim, name)(**hp, **extra)


def run_ganfn(opt, seed: int, steps: int = STEPS):
    p = init_params(seed)
    s = opt.init(p)
    traj, lrs = [], []
    for t in range(steps):
        lrs.append(float(opt.lr(s)))
        grads = torch.func.grad(loss_fn)(p, t)
        p, s = opt.update(grads, s, p)
        traj.append(p)
    return traj, lrs


def run_torch(name: str, hp: dict, seed: int, steps: int = STEPS, scheduler=None, every: int = 1,
              clip: float | None = None):
    p = {k: torch.nn.Parameter(v.clone()) for k, v in init_params(seed).items()}
    o = TORCH[name](list(p.values()), **hp)
    sched = scheduler(o) if scheduler else None
    traj, lrs = [], []
    for t in range(steps):
        lrs.append(o.param_groups[0]["lr"])
        o.zero_grad()
        loss_fn(p, t).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(list(p.values()), clip)
        o.step()
        if sched is not None and (t + 1) % every == 0:
            sched.step()
        traj.append({k: v.detach().clone() for k, v in p.items()})
    return traj, lrs


def compare(traj_a, traj_b, what):
    for t, (a, b) in enumerate(zip(traj_a, traj_b, strict=True)):
        assert_trees_close(a, b, f"{what} after update {t + 1}", rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", sorted(TORCH))
@given(data=st.data())
def test_equals_torch_optim_over_a_loop(name, data):
    hp = data.draw(gst.optimizer_hparams(name))
    seed = data.draw(gst.seeds(1000))
    compare(run_ganfn(ganfn_ctor(name, hp), seed)[0], run_torch(name, hp, seed)[0], f"{name}{hp}")


@pytest.mark.parametrize("name", sorted(TORCH))
@given(data=st.data())
def test_tensor_hyperparameters_equal_float_ones(name, data):
    hp = data.draw(gst.optimizer_hparams(name))
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # float32 would round 0.1
    as_tensors = {k: (tuple(f64(b) for b in v) if k == "betas" else v if isinstance(v, bool) else f64(v))
                  for k, v in hp.items()}
    a = run_ganfn(ganfn_ctor(name, hp), 0)[0]
    b = run_ganfn(ganfn_ctor(name, as_tensors), 0)[0]
    assert_trees_equal(a, b, "float vs tensor hyperparameters")


@given(st.floats(0.5, 0.999), st.integers(1, 3), gst.learning_rates(1e-3, 1e-1))
def test_exponential_decay_equals_exponential_lr(gamma, every, lr):
    ours, ours_lr = run_ganfn(optim.sgd(lr, schedule=optim.exponential_decay(gamma, every)), 0)
    ref, ref_lr = run_torch("sgd", {"lr": lr}, 0, scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma),
                            every=every)
    assert ours_lr == pytest.approx(ref_lr, rel=1e-12)
    compare(ours, ref, "ExponentialLR")


@given(st.integers(2, 5), gst.learning_rates(1e-3, 1e-1))
def test_linear_warmup_equals_linear_lr(steps, lr):
    ours, ours_lr = run_ganfn(optim.adam(lr, (0.5, 0.999), schedule=optim.linear_warmup(steps)), 0)
    ref, ref_lr = run_torch("adam", {"lr": lr, "betas": (0.5, 0.999)}, 0,
                            scheduler=lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / steps, 1.0,
                                                                                  total_iters=steps - 1))
    assert ours_lr == pytest.approx(ref_lr, rel=1e-12)
    compare(ours, ref, "LinearLR warm-up")


@given(st.integers(1, 5), st.floats(0.01, 1.0))
def test_linear_decay_equals_linear_lr(total, end):
    ours, ours_lr = run_ganfn(optim.sgd(0.05, schedule=optim.linear_decay(total, end)), 0)
    ref, ref_lr = run_torch("sgd", {"lr": 0.05}, 0,
                            scheduler=lambda o: torch.optim.lr_scheduler.LinearLR(o, 1.0, end, total_iters=total))
    assert ours_lr == pytest.approx(ref_lr, rel=1e-9)
    compare(ours, ref, "LinearLR decay")


@given(st.floats(1e-3, 10.0), st.sampled_from(["sgd", "adam"]))
def test_clip_by_global_norm_equals_clip_grad_norm(max_norm, name):
    hp = {"lr": 0.01} if name == "sgd" else {"lr": 0.01, "betas": (0.5, 0.999)}
    inner = ganfn_ctor(name, {"momentum": 0.0, **hp} if name == "sgd" else hp)
    ours = run_ganfn(optim.clip_by_global_norm(inner, max_norm), 0)[0]
    ref = run_torch(name, hp, 0, clip=max_norm)[0]
    compare(ours, ref, f"clip_by_global_norm({max_norm})")


def test_update_is_pure():
    p = init_params(0)
    for opt in (optim.adam(1e-2), optim.sgd(0.1, 0.9, nesterov=True), optim.rmsprop(centered=True, momentum=0.5),
                optim.clip_by_global_norm(optim.adamw(1e-2), 1.0)):
        s = opt.init(p)
        g = torch.func.grad(loss_fn)(p, 0)
        p1, s1 = assert_pure(opt.update, g, s, p)
        assert_pure(opt.update, g, s1, p1)


@given(st.lists(gst.learning_rates(), min_size=2, max_size=4), st.lists(gst.betas(), min_size=4, max_size=4))
def test_vmapped_update_with_per_member_hyperparameters(lrs, betas):
    """A stack of optimizer states, each with its own lr and betas, updated by one vmapped call."""
    n = len(lrs)
    opts = [optim.adam(lr, b) for lr, b in zip(lrs, betas[:n], strict=True)]
    params = [init_params(i) for i in range(n)]
    states = [o.init(p) for o, p in zip(opts, params, strict=True)]
    grads = [torch.func.grad(loss_fn)(p, 0) for p in params]
    singles = [o.update(g, s, p) for o, g, s, p in zip(opts, grads, states, params, strict=True)]
    # Any member's optimizer works for all: the hyperparameters live in the state.
    out = torch.func.vmap(opts[0].update)(stack(grads), stack(states), stack(params))
    for i, (p_i, s_i) in enumerate(zip(*[unstack(x) for x in out], strict=True)):
        assert_trees_close(singles[i], (p_i, s_i), f"member {i}", rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bad", [dict(lr=-1e-3), dict(lr=float("nan")), dict(lr=float("inf")),
                                 dict(betas=(0.5, 1.0)), dict(eps=-1.0)])
def test_invalid_hyperparameters_raise(bad):
    with pytest.raises(ValueError, match=r"hyperparameter (lr|beta2|eps)=.*valid range"):
        optim.adam(**bad)


def test_other_invalid_settings_raise():
    with pytest.raises(ValueError, match="nesterov"):
        optim.sgd(0.1, 0.0, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        optim.rmsprop(momentum=1.5)
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_by_global_norm(optim.sgd(0.1), 0.0)
    with pytest.raises(ValueError, match="gamma"):
        optim.exponential_decay(0.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get("adamax")
    assert math.isclose(float(optim.adam(3e-4).lr(optim.adam(3e-4).init(init_params(0)))), 3e-4)


@pytest.mark.parametrize("make,ref", [
    (lambda: optim.adam(1e-2, (0.9, 0.99)), lambda p: torch.optim.Adam(p, 1e-2, (0.9, 0.99))),
    (lambda: optim.sgd(1e-2, 0.9), lambda p: torch.optim.SGD(p, 1e-2, 0.9)),
    (lambda: optim.rmsprop(1e-2, momentum=0.5, centered=True),
     lambda p: torch.optim.RMSprop(p, 1e-2, momentum=0.5, centered=True)),
])
def test_zero_dim_float32_parameters_keep_their_dtype(make, ref):
    # 0-d leaves (a learned temperature, a scalar gain) must not be promoted to
    # float64 by the 0-d float64 hyperparameters.
    opt = make()
    params = {"s": torch.tensor(0.7), "w": torch.tensor([0.3, -0.2])}
    state = opt.init(params)
    tp = [v.clone().requires_grad_() for v in params.values()]
    to = ref(tp)
    for i in range(3):
        g = {"s": torch.tensor(0.1 * (i + 1)), "w": torch.tensor([0.2, -0.1 * i])}
        params, state = opt.update(g, state, params)
        for t, k in zip(tp, g, strict=True):
            t.grad = g[k].clone()
        to.step()
    assert params["s"].dtype == torch.float32 and params["s"].dim() == 0
    torch.testing.assert_close(params["s"], tp[0].detach(), rtol=1e-6, atol=1e-7)


def _scaled_gan(scale_g, scale_d, dtype=torch.float64, **kw):
    from torch import nn

    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2)).to(dtype)
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1)).to(dtype)
    wrap = lambda o, s: o if s is None else optim.loss_scaled(o, s, **kw)
    return ganfn.GAN(G, D, latent_dim=4, g_optimizer=wrap(optim.adam(1e-3), scale_g),
                     d_optimizer=wrap(optim.adam(1e-3), scale_d))


@given(log2_scale=st.integers(0, 40), seed=st.integers(0, 100))
def test_loss_scaling_by_a_power_of_two_changes_nothing(log2_scale, seed):
    plain, scaled = _scaled_gan(None, None), _scaled_gan(2.0**log2_scale, 2.0**log2_scale, growth_interval=10**6)
    a, b = plain.init(seed), scaled.init(seed)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(3):
        real = torch.randn(8, 2, dtype=torch.float64, generator=rng)
        noise = plain.draw_noise(rng, 8, dtype=torch.float64)
        a, ma = plain.train_step(a, real, noise)
        b, mb = scaled.train_step(b, real, noise)
    for k in a.d.params:
        assert torch.equal(a.d.params[k], b.d.params[k])
    for k in ("d_loss", "g_loss", "d_grad_norm", "g_grad_norm"):
        assert torch.allclose(ma[k], mb[k], rtol=1e-12), k


def test_loss_scaling_skips_overflowing_updates_and_backs_off_then_grows():
    gan = _scaled_gan(2.0**10, 2.0**10, growth_interval=2, backoff_factor=0.25)
    state = gan.init(0)
    rng = torch.Generator().manual_seed(0)
    real, noise = torch.randn(8, 2, dtype=torch.float64, generator=rng), gan.draw_noise(rng, 8, dtype=torch.float64)
    # A non-finite gradient (what an fp16 overflow produces): one NaN in the batch.
    big = state
    bad_real = real.clone()
    bad_real[0, 0] = float("nan")
    new, m = gan.train_step(big, bad_real, noise)
    for k in big.d.params:
        assert torch.equal(new.d.params[k], big.d.params[k]), "an overflowing update must be skipped"
    assert torch.equal(new.d.opt["mu"][k], big.d.opt["mu"][k]) and int(new.d.opt["count"]) == int(big.d.opt["count"])
    assert float(new.d.opt["loss_scale"]) == 2.0**8
    assert float(m["d_grad_norm"]) == 0.0
    s = state
    for _ in range(2):
        s, _ = gan.train_step(s, real, noise)
    assert float(s.d.opt["loss_scale"]) == 2.0**11 and int(s.d.opt["good_steps"]) == 0


def test_loss_scaled_rejects_bad_settings():
    with pytest.raises(ValueError, match="init_scale"):
        optim.loss_scaled(optim.adam(1e-3), 0.0)
    with pytest.raises(ValueError, match="growth_interval"):
        optim.loss_scaled(optim.adam(1e-3), growth_interval=0)
