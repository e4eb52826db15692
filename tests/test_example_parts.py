"""The newcomer's parts in examples/ (path length, zCR, a scheduled R1), tested like built-ins:
closed forms on linear networks, pure, vmapped member equals single run, resumed bit-identically, compiled."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_resumes_bit_identically, compiled_and_eager, small_gan_modules
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import ensemble
from ganfn.testing import (
    assert_pure,
    assert_trees_close,
    assert_vmap_equivalent,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from path_length import lazy_path_length, path_length
from scheduled_r1 import scheduled_r1
from zcr import zcr

torch.set_num_threads(1)
B = 6
MAKERS = {"path_length": lambda: lazy_path_length(2, 1.0), "zcr": lambda: zcr(2.0, 0.5, sigma=0.1),
          "scheduled_r1": lambda: scheduled_r1(4.0, 1.0, steps=3)}
HPARAMS = {"path_length": [{"pl_weight": 0.5}, {}], "zcr": [{"zcr_dis": 1.0}, {"zcr_gen": 0.1}],
           "scheduled_r1": [{"r1_gamma.end": 0.0}, {"r1_gamma.start": 2.0}]}


def _gan(part, loss="hinge", **kw):
    G, D = small_gan_modules()
    return ganfn.GAN(G, D, latent_dim=3, loss=loss, parts=[part], **kw)


def _linear(part):
    return ganfn.GAN(nn.Linear(3, 2), nn.Linear(2, 1), latent_dim=3, loss="wasserstein", parts=[part])


def _inputs(gan, seed):
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B)
    return torch.randn(B, 2, generator=torch.Generator().manual_seed(seed + 1)), noise


@settings(max_examples=8)
@given(st.integers(0, 500))
def test_path_length_of_a_linear_generator_is_the_closed_form(seed):
    gan = _linear(path_length(1.0))
    state = gan.init(seed)
    real, noise = _inputs(gan, seed)
    ng = ganfn.tree_index(noise.g, 0)
    _, _, aux = gan.g_grads(state, ng)
    W = state.g.params["weight"].double()  # G(z) = W z + b: grad_z <G(z), y> = W^T y
    lengths = (ng.parts["path_length"]["y"].double() @ W).norm(dim=1)
    torch.testing.assert_close(aux.parts["path_length"]["metrics"]["length"], lengths.mean(), rtol=1e-5, atol=1e-7)
    new, _ = gan.train_step(state, real, noise)
    # the first step sets it
    torch.testing.assert_close(new.parts["path_length"]["mean"], lengths.mean(), rtol=1e-5, atol=1e-7)


def test_lazy_path_length_runs_on_every_second_g_update_only():
    gan = _gan(lazy_path_length(2, 1.0))
    state, means = gan.init(0), []
    rng, data = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    for _ in range(4):
        state, m = gan.train_step(state, torch.randn(B, 2, generator=data), gan.draw_noise(rng, B))
        means.append(float(state.parts["path_length"]["inner"]["mean"]))
    assert means[0] != 0 and means[1] == means[0] and means[2] != means[1] and means[3] == means[2]
    assert int(state.parts["path_length"]["count"]) == 4


@settings(max_examples=8)
@given(st.integers(0, 500))
def test_zcr_on_linear_networks_is_the_closed_form(seed):
    gan = _linear(zcr(2.0, 0.5, sigma=0.1))
    state = gan.init(seed)
    real, noise = _inputs(gan, seed)
    nd, ng = ganfn.tree_index(noise.d, 0), ganfn.tree_index(noise.g, 0)
    W, v = state.g.params["weight"].double(), state.d.params["weight"].double().reshape(-1)
    d_gap = ((nd.parts["zcr"]["dz"].double() @ W.T) @ v).square().mean()  # D(G(z)) - D(G(z+dz)) = -v.W dz
    g_dist = (ng.parts["zcr"]["dz"].double() @ W.T).square().sum(1).mean()
    torch.testing.assert_close(gan.d_grads(state, real, nd)[2].parts["zcr"]["metrics"]["d_gap"].double(), d_gap,
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(gan.g_grads(state, ng)[2].parts["zcr"]["metrics"]["g_dist"].double(), g_dist,
                               rtol=1e-4, atol=1e-7)
    plain = _linear(ganfn.parts.Part("none"))
    base = plain.g_grads(plain.init(seed), ng)[0]
    torch.testing.assert_close(gan.g_grads(state, ng)[0].double(), base.double() - 0.5 * g_dist, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("step", [0, 1, 3, 10])
def test_scheduled_r1_on_a_linear_critic_follows_its_schedule(step):
    gan = _linear(scheduled_r1(4.0, 1.0, steps=3))
    state = gan.init(0)._replace(step=torch.tensor(step))
    real, noise = _inputs(gan, 0)
    aux = gan.d_grads(state, real, ganfn.tree_index(noise.d, 0))[2]
    gamma = 4.0 - 3.0 * min(step, 3) / 3
    w = state.d.params["weight"].double()
    assert float(aux.parts["scheduled_r1"]["metrics"]["gamma"]) == gamma
    torch.testing.assert_close(aux.penalty.double(), 0.5 * gamma * w.square().sum(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="batch norm"):
        ganfn.GAN(*small_gan_modules(d_norm=nn.BatchNorm1d(8)), latent_dim=3, parts=[scheduled_r1()])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_example_part_step_is_pure_and_vmapped_members_equal_single_runs(name):
    gan = _gan(MAKERS[name]())
    real, noise = _inputs(gan, 0)
    assert_pure(gan.train_step, gan.init(0), real, noise, modules=[gan.generator, gan.discriminator])
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=B, hparams=HPARAMS[name])


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_example_part_resumes_bit_identically(name, tmp_path):
    gan = _gan(MAKERS[name]())
    rng, data = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    batches = [(torch.randn(B, 2, generator=data), gan.draw_noise(rng, B)) for _ in range(4)]
    assert_resumes_bit_identically(gan, batches, 2, tmp_path / "ck.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_example_part_compiles_and_equals_eager(name):
    torch._dynamo.reset()
    # A BCE loss: the hinge loss can give D's last bias an exactly-zero gradient, whose rounding noise Adam makes a
    # full step.
    gan = _gan(MAKERS[name](), loss="non_saturating")
    state = ensemble.init_many(gan, [0, 1], HPARAMS[name])
    rng = torch.Generator().manual_seed(5)
    reals = [torch.randn(B, 2, generator=rng) for _ in range(3)]
    (compiled, _), (eager, _) = compiled_and_eager(gan, state, reals, B)
    assert_trees_close(compiled, eager, "compiled vs eager", rtol=1e-4, atol=1e-5)
