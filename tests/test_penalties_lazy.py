"""Lazy R1/R2/GP (every k D updates) and LeCam's stateful part inside the GAN step."""
from __future__ import annotations

import pytest
import torch
from conftest import small_gan_modules
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import data, penalties, regularisers
from ganfn.loop import fit
from ganfn.testing import assert_pure, assert_trees_equal, assert_vmap_equivalent

torch.set_num_threads(1)
B = 8
QUIET = dict(progress=False, print_fn=lambda s: None)


def _gan(*penalty, parts=(), **kw):
    G, D = small_gan_modules()
    return ganfn.GAN(G, D, latent_dim=3, loss="hinge", parts=[*penalty, *parts], **kw)


def _run(gan, steps, seed=0, n_critic=1):
    state, rng = gan.init(seed), torch.Generator().manual_seed(seed)
    data_rng, ms = torch.Generator().manual_seed(seed + 1), []
    for _ in range(steps):
        real = torch.randn(*([n_critic] if n_critic > 1 else []), B, 2, generator=data_rng)
        state, m = gan.train_step(state, real, gan.draw_noise(rng, B))
        ms.append(m)
    return state, ms


@pytest.mark.parametrize("make", [penalties.r1, penalties.r2, penalties.gradient_penalty])
def test_lazy_every_one_equals_the_eager_penalty_bit_for_bit(make):
    eager, _ = _run(_gan(make(2.0)), 5)
    lazy, ms = _run(_gan(make(2.0, every=1)), 5)
    _, ms_e = _run(_gan(make(2.0)), 5)
    assert_trees_equal((eager.g, eager.d), (lazy.g, lazy.d), "every=1 vs eager")
    assert [float(m["penalty"]) for m in ms] == [float(m["penalty"]) for m in ms_e]
    assert int(lazy.parts[make(1.0).name]["count"]) == 5


@settings(max_examples=4)
@given(st.sampled_from([2, 5, 16]), st.sampled_from([1, 4]))
def test_lazy_r1_is_computed_on_exactly_every_kth_d_update(k, n_critic):
    gan = _gan(penalties.r1(1.0, every=k), n_critic=n_critic)
    steps = (2 * k + 3 + n_critic - 1) // n_critic
    state, rng = gan.init(0), torch.Generator().manual_seed(0)
    due, update = [], 0
    for _ in range(steps):
        noise = gan.draw_noise(rng, B)
        for i in range(n_critic):
            real = torch.randn(B, 2, generator=torch.Generator().manual_seed(update))
            loss, grads, aux = gan.d_grads(state, real, ganfn.tree_index(noise.d, i))
            due.append(bool(aux.parts["r1"]["due"]))
            # the penalty is k times R1 where due and exactly 0 elsewhere
            r1 = penalties.r1(1.0).term(lambda x, state=state: gan.d_apply(state.d.params, state.d.buffers, x)[0],
                                        real, real, None, torch.tensor(1.0))
            torch.testing.assert_close(aux.penalty.float(), k * r1 if due[-1] else torch.zeros(()), rtol=1e-5, atol=0)
            state = gan.d_update(state, grads, aux)
            update += 1
    assert [i for i, d in enumerate(due) if d] == list(range(0, update, k))


def test_lazy_penalty_in_stacked_members_equals_single_runs_and_is_pure():
    gan = _gan(penalties.r1(1.0, every=3), penalties.gradient_penalty(1.0, every=2))
    assert_vmap_equivalent(gan, [0, 1], steps=4, hparams=[{"r1_weight": 0.5}, {"gp_weight": 3.0}])
    state, real = gan.init(0), torch.randn(B, 2)
    assert_pure(gan.train_step, state, real, gan.draw_noise(torch.Generator().manual_seed(0), B))


def test_lazy_errors():
    with pytest.raises(ValueError, match="every= must be an int >= 1"):
        penalties.r1(1.0, every=0)
    with pytest.raises(ValueError, match="every= must be an int >= 1"):
        penalties.r2(1.0, every=1.5)
    clip = penalties.weight_clip(0.01)._replace(every=2)
    with pytest.raises(ValueError, match="not to projections"):
        penalties.as_part(clip)


# -- LeCam ---------------------------------------------------------------------------------


def test_lecam_first_term_and_state_follow_the_math():
    gan = _gan(parts=[penalties.lecam(0.5, decay=0.9)])
    state, real = gan.init(0), torch.randn(B, 2, generator=torch.Generator().manual_seed(1))
    noise = gan.draw_noise(torch.Generator().manual_seed(2), B)
    _, grads, aux = gan.d_grads(state, real, ganfn.tree_index(noise.d, 0))
    out = gan.d_apply(state.d.params, state.d.buffers, torch.cat([real, aux.fake]))[0].reshape(-1)
    s = regularisers.lecam_update(regularisers.lecam_init(), out[:B], out[B:])
    torch.testing.assert_close(aux.penalty, regularisers.lecam_term(out[:B], out[B:], s, 0.5))
    new = gan.d_update(state, grads, aux).parts["lecam"]
    torch.testing.assert_close(new["real"], out[:B].mean())
    assert int(new["count"]) == 1


def test_lecam_state_checkpoints_and_resumes_bit_identically(tmp_path):
    gan = _gan(penalties.r1(0.1, every=2), parts=[penalties.lecam(0.3)])
    kw = dict(steps=6, batch_size=B, log_every=1, checkpoint_every=None, seed=3, **QUIET)
    full, _ = fit(gan, data.ring8, run_dir=tmp_path / "full", **kw)
    fit(gan, data.ring8, run_dir=tmp_path / "half", **{**kw, "steps": 3})
    resumed, _ = fit(gan, data.ring8, run_dir=tmp_path / "half", resume=True, **kw)
    assert_trees_equal(full, resumed, "resumed vs uninterrupted state")
    assert int(resumed.parts["lecam"]["count"]) == 6 and float(resumed.parts["lecam"]["fake"]) != 0.0
    assert int(resumed.parts["r1"]["count"]) == 6


def test_lecam_vmapped_members_with_their_own_weights_equal_single_runs():
    gan = _gan(parts=[penalties.lecam()])
    assert_vmap_equivalent(gan, [0, 1, 2], steps=3,
                           hparams=[{"lecam_weight": 0.0}, {"lecam_weight": 1.0}, {"lecam_decay": 0.5}])
    with pytest.raises(ValueError, match="lecam_decay"):
        gan.init(0, lecam_decay=1.5)


def test_lazy_term_metric_reports_the_term_only_where_computed():
    # "r1/term" is the scaled R1 on due updates and NaN elsewhere; "penalty" (the
    # sum added to D's loss) is 0 there. A stacked run (masked term, no branch)
    # reports the same as the single run (eager: the term is skipped).
    gan = _gan(penalties.r1(1.0, every=3))
    _, ms = _run(gan, 7)
    terms = [float(m["r1/term"]) for m in ms]
    for t, (term, m) in enumerate(zip(terms, ms, strict=True)):
        if t % 3 == 0:
            assert term == float(m["penalty"]) and term > 0
        else:
            assert term != term and float(m["penalty"]) == 0.0  # NaN: not computed
    step = ganfn.ensemble.make_step(gan)
    state, rng = ganfn.ensemble.init_many(gan, [0]), ganfn.ensemble.rngs([0])
    data_rng = torch.Generator().manual_seed(1)
    for t in range(7):
        state, m = step(state, torch.randn(B, 2, generator=data_rng), ganfn.ensemble.draw_noise_many(gan, rng, B))
        torch.testing.assert_close(m["r1/term"][0], torch.tensor(terms[t], dtype=m["r1/term"].dtype), equal_nan=True,
                                   rtol=1e-6, atol=0)
        assert m["penalty"].dtype == ms[t]["penalty"].dtype


def test_lazy_term_metric_averages_over_the_due_updates_of_a_step():
    # n_critic = 4, every = 2: updates 0 and 2 of the first step are due; the
    # step's "r1/term" is their mean, the NaN updates left out.
    gan = _gan(penalties.r1(1.0, every=2), n_critic=4)
    state, rng = gan.init(0), torch.Generator().manual_seed(0)
    real, noise = torch.randn(4, B, 2, generator=torch.Generator().manual_seed(1)), gan.draw_noise(rng, B)
    _, m = gan.train_step(state, real, noise)
    s, vals = state, []
    for i in range(4):
        loss, grads, aux = gan.d_grads(s, real[i], ganfn.tree_index(noise.d, i))
        vals.append(float(aux.parts["r1"]["metrics"]["term"]))
        s = gan.d_update(s, grads, aux)
    assert [v == v for v in vals] == [True, False, True, False]
    torch.testing.assert_close(float(m["r1/term"]), (vals[0] + vals[2]) / 2, rtol=1e-6, atol=0)
    assert float(m["penalty"]) > 0 and m["d_loss"].isfinite()


@pytest.mark.slow
def test_lazy_r1_and_lecam_compile_and_equal_eager():
    # The lazy term's torch.where and LeCam's running averages under
    # torch.compile(vmap(step), fullgraph=True): no fallback, the eager numbers.
    import warnings

    from ganfn import ensemble

    torch._dynamo.reset()
    gan = _gan(penalties.r1(1.0, every=2), parts=[penalties.lecam(0.5)])
    state = ensemble.init_many(gan, [0, 1], [{"lecam_weight": 1.0}, {"r1_weight": 3.0}])
    rng = torch.Generator().manual_seed(5)
    reals = [torch.randn(B, 2, generator=rng) for _ in range(4)]
    out = []
    for compile_ in (True, False):
        st_, rngs, ms = state, ensemble.rngs([0, 1]), []
        step = ensemble.make_step(gan, compile=compile_)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager
            for r in reals:
                st_, m = step(st_, r, ensemble.draw_noise_many(gan, rngs, B))
                ms.append(m)
        out.append((st_, ms))
    (sc, mc), (se, me) = out
    assert_trees_close_nan = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    for a, b in zip(ganfn.tree.leaves((sc, mc)), ganfn.tree.leaves((se, me)), strict=True):
        assert_trees_close_nan(a, b)
    assert [bool(m["r1/term"][0].isnan()) for m in mc] == [False, True, False, True]
