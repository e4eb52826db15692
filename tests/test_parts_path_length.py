"""The built-in path-length part (StyleGAN2): its closed form on a linear generator,
lazy with StyleGAN2's weighting, pure, vmapped member equals single run, resumed
bit-identically, on the StyleGAN2 generator (z only), and its bad arguments."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_resumes_bit_identically, compiled_and_eager
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import ganfn
from ganfn import ensemble
from ganfn.models import stylegan2
from ganfn.testing import assert_pure, assert_trees_close, assert_vmap_equivalent

torch.set_num_threads(1)
B = 4


def _linear(part):
    G = nn.Sequential(nn.Linear(3, 8), nn.Unflatten(1, (2, 2, 2)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(8, 1))
    return ganfn.GAN(G, D, latent_dim=3, loss="non_saturating", parts=[part])


def _style(part_fn, seed=0):
    G, D = stylegan2(8, 1, z_dim=4, w_dim=4, mapping_layers=1, width=4, mbstd_group=2,
                     generator=torch.Generator().manual_seed(seed))
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, loss="non_saturating", parts=[part_fn(G)]), G


def _batches(gan, n, shape):
    rng, data = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    return [(torch.randn(B, *shape, generator=data), gan.draw_noise(rng, B)) for _ in range(n)]


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 300), st.floats(0.1, 3.0), st.floats(0.0, 1.0), st.sampled_from([1, 2]))
def test_path_length_of_a_linear_generator_is_the_closed_form(seed, weight, decay, shrink):
    gan = _linear(ganfn.parts.path_length(weight, every=1, decay=decay, batch_shrink=shrink))
    state = gan.init(seed)
    noise = gan.draw_noise(torch.Generator().manual_seed(seed), B)
    ng = ganfn.tree_index(noise.g, 0)
    n = B // shrink
    W = state.g.params["0.weight"].double()  # G(z) = W z + b: grad_z <G(z), y> = W^T y
    y = ng.parts["path_length"]["y"][:n].double().reshape(n, -1)
    lengths = (y @ W).norm(dim=1)
    mean = decay * lengths.mean()  # the running mean starts at 0 (official StyleGAN2)
    term = gan.g_grads(state, ng)[2].parts["path_length"]["metrics"]["term"]
    torch.testing.assert_close(term.double(), weight * (lengths - mean).square().mean(), rtol=1e-4, atol=1e-7)
    new, _ = gan.train_step(state, torch.randn(B, 2, 2, 2), noise)
    torch.testing.assert_close(new.parts["path_length"]["inner"]["mean"], mean, rtol=1e-5, atol=1e-9)
    # The direction is N(0, I) / sqrt(H W), as in the official code (channels not counted).
    assert ng.parts["path_length"]["y"].shape == (B, 2, 2, 2)


def test_lazy_path_length_runs_every_kth_g_update_with_k_times_the_weight():
    gan = _linear(ganfn.parts.path_length(1.0, every=3))
    state, means, terms = gan.init(0), [], []
    for real, noise in _batches(gan, 6, (2, 2, 2)):
        state, m = gan.train_step(state, real, noise)
        means.append(float(state.parts["path_length"]["inner"]["mean"]))
        terms.append(float(m["path_length/term"]))
    assert [means[i] != means[i - 1] for i in range(1, 6)] == [False, False, True, False, False]
    assert [t == t for t in terms] == [True, False, False, True, False, False]  # NaN where not due
    eager = _linear(ganfn.parts.path_length(1.0, every=1))
    s0 = gan.init(0)
    ng = ganfn.tree_index(_batches(gan, 1, (2, 2, 2))[0][1].g, 0)
    lazy_term = gan.g_grads(s0, ng)[2].parts["path_length"]["metrics"]["term"]
    plain_term = eager.g_grads(eager.init(0), ng)[2].parts["path_length"]["metrics"]["term"]
    torch.testing.assert_close(lazy_term, 3 * plain_term)


def test_on_stylegan2_the_length_is_taken_over_z_only():
    gan, G = _style(lambda G: ganfn.parts.path_length(1.0, every=1, batch_shrink=1, z_dims=G.z_dim))
    whole, _ = _style(lambda G: ganfn.parts.path_length(1.0, every=1, batch_shrink=1))
    state = gan.init(0)
    # Non-zero noise strengths: then the noise entries of the latent move the image too.
    g = {k: v + 0.3 if "noise_strength" in k else v for k, v in state.g.params.items()}
    state = state._replace(g=state.g._replace(params=g))
    ng = ganfn.tree_index(gan.draw_noise(torch.Generator().manual_seed(0), B).g, 0)
    z_only = gan.g_grads(state, ng)[2].parts["path_length"]["metrics"]["term"]
    full = whole.g_grads(state, ng)[2].parts["path_length"]["metrics"]["term"]
    assert torch.isfinite(z_only) and not torch.equal(z_only, full)


def test_path_length_step_is_pure_and_vmapped_members_equal_single_runs():
    gan, G = _style(lambda G: ganfn.parts.path_length(2.0, every=2, z_dims=G.z_dim))
    real = torch.randn(B, 1, 8, 8)
    noise = gan.draw_noise(torch.Generator().manual_seed(0), B)
    assert_pure(gan.train_step, gan.init(0), real, noise, modules=[gan.generator, gan.discriminator])
    assert_vmap_equivalent(gan, [0, 1], steps=3, batch_size=B, hparams=[{"pl_weight": 0.5}, {"pl_decay": 0.1}])


def test_path_length_resumes_bit_identically(tmp_path):
    gan = _linear(ganfn.parts.path_length(1.0, every=2))
    batches = _batches(gan, 4, (2, 2, 2))
    assert_resumes_bit_identically(gan, batches, 3, tmp_path / "ck.pt")


def test_path_length_takes_a_schedule_for_its_weight():
    gan = _linear(ganfn.parts.path_length(ganfn.schedules.linear(0.0, 4.0, steps=4), every=1))
    ng = ganfn.tree_index(_batches(gan, 1, (2, 2, 2))[0][1].g, 0)
    terms = [gan.g_grads(gan.init(0)._replace(step=torch.tensor(s)), ng)[2].parts["path_length"]["metrics"]["term"]
             for s in (0, 2, 4)]
    assert float(terms[0]) == 0.0
    torch.testing.assert_close(terms[2], 2 * terms[1])


@given(st.sampled_from([{"every": 0}, {"every": 2.0}, {"batch_shrink": 0}, {"z_dims": 0}, {"weight": -1.0},
                        {"decay": 1.5}, {"every": True}]))
@settings(max_examples=10, deadline=None)
def test_bad_path_length_arguments_are_refused(kw):
    try:
        ganfn.parts.path_length(**kw)
    except ValueError as e:
        assert any(k in str(e) for k in ("every", "batch_shrink", "z_dims", "pl_weight", "pl_decay"))
    else:
        raise AssertionError(f"path_length({kw}) was accepted")


def test_path_length_refuses_non_image_samples_and_too_many_z_dims():
    G, D = nn.Linear(3, 2), nn.Linear(2, 1)
    try:
        ganfn.GAN(G, D, latent_dim=3, parts=[ganfn.parts.path_length()]).init(0)
    except ValueError as e:
        assert "[..., H, W]" in str(e)
    else:
        raise AssertionError("a 2-value sample was accepted")
    try:
        _linear(ganfn.parts.path_length(z_dims=4))
    except ValueError as e:
        assert "z_dims=4" in str(e)
    else:
        raise AssertionError("z_dims larger than the latent was accepted")


@pytest.mark.slow
def test_path_length_compiles_and_equals_eager():
    torch._dynamo.reset()
    gan = _linear(ganfn.parts.path_length(1.0, every=2))
    state = ensemble.init_many(gan, [0, 1], [{"pl_weight": 0.5}, {}])
    rng = torch.Generator().manual_seed(5)
    reals = [torch.randn(B, 2, 2, 2, generator=rng) for _ in range(3)]
    (compiled, _), (eager, _) = compiled_and_eager(gan, state, reals, B)
    assert_trees_close(compiled, eager, "compiled vs eager", rtol=1e-4, atol=1e-5)
