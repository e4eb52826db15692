"""ganfn.steps: the one step factory and its one compile fallback."""
from __future__ import annotations

import warnings

import pytest
import torch
from conftest import small_gan_modules

import ganfn
from ganfn import ensemble, steps
from ganfn.testing import assert_trees_equal

torch.set_num_threads(1)
B = 4


def _gan():
    return ganfn.GAN(*small_gan_modules(), latent_dim=3, parts=[ganfn.parts.ema(0.9)])


def _inputs(gan):
    return (gan.init(0), torch.randn(B, 2, generator=torch.Generator().manual_seed(1)),
            gan.draw_noise(torch.Generator().manual_seed(0), B))


def test_an_uncompiled_single_step_is_the_train_step_itself():
    gan = _gan()
    assert steps.make_step(gan) == gan.train_step


def test_ganfn_no_compile_turns_compilation_off_for_single_and_members(monkeypatch):
    gan = _gan()
    monkeypatch.setenv("GANFN_NO_COMPILE", "1")
    assert steps.compile_disabled()
    assert steps.make_step(gan, compile=True) == gan.train_step
    state = ensemble.init_many(gan, [0, 1])
    rngs = ensemble.rngs([0, 1])
    noise = ensemble.draw_noise_many(gan, rngs, B)
    real = torch.randn(B, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = steps.make_step(gan, members=True, compile=True)(state, real, noise)
    assert_trees_equal(got, ensemble.make_step(gan)(state, real, noise), "GANFN_NO_COMPILE vs compile=False")
    monkeypatch.setenv("GANFN_NO_COMPILE", "0")
    assert not steps.compile_disabled()


def test_a_compiler_failure_warns_once_and_runs_the_same_step_eagerly():
    gan = _gan()
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no backend here")

    step = steps.with_fallback(broken, gan.train_step, "train_step")
    inputs = _inputs(gan)
    with pytest.warns(RuntimeWarning, match=r"torch.compile of train_step failed \(RuntimeError: no backend here\)"):
        got = step(*inputs)
    assert_trees_equal(got, gan.train_step(*inputs), "fallback vs eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(*inputs)
    assert len(calls) == 1


def test_checked_inputs_are_checked_before_compiling():
    def check(state, real, noise):
        raise ValueError("bad real")

    step = steps.with_fallback(lambda *a: None, lambda *a: None, "x", check)
    with pytest.raises(ValueError, match="bad real"):
        step(None, None, None)


def test_an_unknown_reduce_is_refused():
    with pytest.raises(ValueError, match="all_reduce"):
        steps.make_step(_gan(), reduce="mean")
