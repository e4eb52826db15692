"""parts.every, parts.starting_at and parts.named: parts made of parts."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import parts, penalties
from ganfn.parts import Ctx, GTerm, Hyper, Part
from ganfn.testing import assert_pure, assert_vmap_equivalent
from ganfn.testing import strategies as gst

torch.set_num_threads(1)
B = 4


def _gan(*ps, **kw):
    return ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="wasserstein", parts=list(ps), **kw)


def _g_energy(weight: float = 0.5) -> Part:
    """A toy G-side term: weight * mean(fake^2), reporting its value."""

    def g_term(x: GTerm, ctx: Ctx):
        val = ctx.hp["energy_weight"] * x.fake.pow(2).mean()
        return val, {"metrics": {"value": val.detach()}}

    return Part("energy", {"energy_weight": Hyper(weight)}, g_term=g_term)


def _run(gan, state, steps, seed=0):
    rng, data = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(steps):
        state, m = gan.train_step(state, torch.randn(B, 2, generator=data), gan.draw_noise(rng, B))
        out.append(m)
    return state, out


@settings(max_examples=6)
@given(st.integers(1, 4), st.booleans(), gst.seeds(1000))
def test_every_runs_a_g_term_on_every_kth_update_scaled_by_k(k, scale, seed):
    lazy, plain, bare = _gan(parts.every(k, _g_energy(), scale=scale)), _gan(_g_energy()), _gan()
    noise = ganfn.tree_index(lazy.draw_noise(torch.Generator().manual_seed(seed), B).g, 0)
    base = bare.g_grads(bare.init(seed), noise)[0]
    term = plain.g_grads(plain.init(seed), noise)[0] - base
    s_lazy = lazy.init(seed)
    for count in range(2 * k + 1):
        loss, _, aux = lazy.g_grads(s_lazy._replace(parts={"energy": {"count": torch.tensor(count)}}), noise)
        due = count % k == 0
        want = base + (term * (k if scale else 1) if due else 0.0)
        torch.testing.assert_close(loss, want.to(loss.dtype), rtol=1e-5, atol=1e-6)
        assert float(aux.parts["energy"]["due"]) == float(due)


def test_every_counts_its_networks_updates_and_reports_nan_where_not_computed():
    gan = _gan(parts.every(3, _g_energy()))
    state, ms = _run(gan, gan.init(0), 4)
    assert int(state.parts["energy"]["count"]) == 4
    shown = [float(m["energy/term"]) for m in ms]
    assert shown[0] == shown[0] and shown[3] == shown[3]
    assert all(v != v for v in shown[1:3])


def test_every_eager_skip_equals_the_masked_vmapped_term():
    assert_vmap_equivalent(_gan(parts.every(2, _g_energy()), penalties.as_part(penalties.r1(1.0, every=3))), [0, 1],
                           steps=4, batch_size=B)


def test_every_refuses_what_it_cannot_make_lazy():
    with pytest.raises(ValueError, match="int >= 1"):
        parts.every(0, _g_energy())
    with pytest.raises(ValueError, match="exactly one loss term"):
        parts.every(2, parts.ema(0.9))
    with pytest.raises(ValueError, match="not to projections"):
        penalties.as_part(penalties.weight_clip(0.1)._replace(every=2))


def test_starting_at_switches_a_term_on_at_its_step_per_member():
    gan = _gan(parts.starting_at(2, _g_energy()))
    assert gan.defaults["energy_start_at"] == 2
    noise = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(0), B).g, 0)
    plain = _gan(_g_energy())
    s0, sp = gan.init(0), plain.init(0)
    base = _gan().g_grads(_gan().init(0), noise)[0]
    for step in range(4):
        loss = gan.g_grads(s0._replace(step=torch.tensor(step)), noise)[0]
        want = plain.g_grads(sp, noise)[0] if step >= 2 else base
        torch.testing.assert_close(loss, want.to(loss.dtype))
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=B,
                           hparams=[{"energy_start_at": 1.0}, {"energy_start_at": 5.0}])


def test_starting_at_holds_an_after_hook_until_its_step():
    gan = _gan(parts.starting_at(2, parts.ema(0.5, warmup=False)))
    state0 = gan.init(0)
    one, _ = _run(gan, state0, 1)
    assert torch.equal(gan.sample_params(one)["weight"], one.g.params["weight"])  # off: G's own weights
    state, _ = _run(gan, state0, 2)
    for k, v in state.parts["ema"]["params"].items():
        assert torch.equal(v, state0.parts["ema"]["params"][k])
    assert int(state.parts["ema"]["count"]) == 0
    state, _ = _run(gan, state, 1, seed=5)
    assert int(state.parts["ema"]["count"]) == 1
    assert not torch.equal(state.parts["ema"]["params"]["weight"], state0.parts["ema"]["params"]["weight"])


def test_named_makes_two_instances_of_one_part():
    gan = _gan(parts.ema(0.5, warmup=False), parts.named("ema_slow", parts.ema(0.9, warmup=False)))
    assert {"ema_decay", "ema_slow/ema_decay"} <= set(gan.defaults)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), B)
    assert_pure(gan.train_step, gan.init(0), torch.randn(B, 2), noise)
    state, _ = _run(gan, gan.init(0), 3)
    fast, slow = state.parts["ema"]["params"]["weight"], state.parts["ema_slow"]["params"]["weight"]
    assert not torch.equal(fast, slow)
    # ema_slow alone with decay 0.5 is the first EMA: same part, same numbers, own keys.
    same = gan.init(0, **{"ema_slow/ema_decay": 0.5})
    out, _ = _run(gan, same, 3)
    assert torch.equal(out.parts["ema"]["params"]["weight"], out.parts["ema_slow"]["params"]["weight"])


def test_named_keeps_the_flat_key_as_an_alias_while_unique():
    gan = _gan(parts.named("lecam2", penalties.lecam(0.3)))
    assert gan.aliases == {"lecam_weight": "lecam2/lecam_weight", "lecam_decay": "lecam2/lecam_decay"}
    state = gan.init(0, lecam_weight=0.7)
    assert float(state.hparams["lecam2/lecam_weight"]) == 0.7
    _run(gan, state, 2)  # LeCam reads its own aux slice: it runs under another name
    two = _gan(parts.named("a", parts.ema(0.9)), parts.named("b", parts.ema(0.99)))
    with pytest.raises(ValueError, match="unknown hyperparameter 'ema_decay'"):
        two.init(0, ema_decay=0.5)


def test_named_refuses_a_bad_name_and_unnamed_twins_are_refused():
    with pytest.raises(ValueError, match="identifier"):
        parts.named("not a name", parts.ema())
    with pytest.raises(ValueError, match="two parts are named 'ema'"):
        _gan(parts.ema(), parts.ema())
