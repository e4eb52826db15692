"""The pure step on a GPU: vmapped members equal single runs, the step is pure.

Each test runs on the CPU too (so CI keeps the code in step with the API) and,
marked ``cuda``, on a GPU, skipped where none is present. Run the GPU cases
with ``python -m pytest -m cuda`` (``bench/gpu_check.sh`` does).
"""
from __future__ import annotations

import optree
import pytest
import torch
from torch import nn

import ganfn
from ganfn import ensemble
from ganfn.testing import assert_pure

CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                   pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])
DEVICES = pytest.mark.parametrize("dev", ["cpu", CUDA])
LATENT, B, STEPS = 4, 16, 5


def _gan(dev: str, penalty: str | None = "gp") -> ganfn.GAN:
    pens = [] if penalty is None else [ganfn.penalties.get(penalty)]
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(LATENT, 32), nn.ReLU(), nn.Linear(32, 2)).to(dev)
    D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1)).to(dev)
    return ganfn.GAN(G, D, latent_dim=LATENT, loss="non_saturating", n_critic=2,
                     parts=ganfn.recipes.classic(penalties=pens, ema_decay=0.9))


def _reals(gan: ganfn.GAN, dev: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(gan.n_critic, B, 2, generator=g) * 2).to(dev) for _ in range(STEPS)]


def _to(tree, dev: str):
    return ganfn.tree_map(lambda t: t.to(dev) if isinstance(t, torch.Tensor) else t, tree)


def _differ(a, b) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(optree.tree_leaves(a), optree.tree_leaves(b), strict=True)
               if isinstance(x, torch.Tensor))


@DEVICES
def test_vmapped_members_equal_single_runs(dev: str) -> None:
    gan, seeds = _gan(dev), [3, 7, 11]
    reals = _reals(gan, dev)
    state = _to(ensemble.init_many(gan, seeds), dev)
    rngs = ensemble.rngs(seeds, device=dev)
    step = ensemble.make_step(gan)
    for real in reals:
        state, metrics = step(state, real, ensemble.draw_noise_many(gan, rngs, B))
    assert metrics["d_loss"].device.type == dev and not metrics["diverged"].any()
    members = ganfn.unstack(state)
    for seed, member in zip(seeds, members, strict=True):
        single = _to(gan.init(seed), dev)
        rng = ensemble.rngs([seed], device=dev)[0]
        for real in reals:
            single, _ = gan.train_step(single, real, gan.draw_noise(rng, B))
        # cuBLAS may pick a different kernel for a batched product: equal to round-off.
        ganfn.testing.assert_trees_close(member, single, f"member seed {seed}", rtol=1e-4, atol=1e-5)
    assert _differ(members[0], members[1])  # the members are not all one run


@DEVICES
def test_train_step_is_pure(dev: str) -> None:
    gan = _gan(dev)
    state = _to(gan.init(0), dev)
    noise = gan.draw_noise(torch.Generator(device=dev).manual_seed(0), B)
    assert all(t.device.type == dev for t in optree.tree_leaves(noise))
    new, _ = assert_pure(gan.train_step, state, _reals(gan, dev)[0], noise, modules=[gan.generator, gan.discriminator])
    assert _differ(new, state)  # it did update


@pytest.mark.parametrize("dev", [CUDA])  # on the CPU, tests/test_ensemble.py compiles
def test_compiled_vmapped_step_matches_eager(dev: str) -> None:
    gan, seeds = _gan(dev, penalty=None), [0, 1]
    real = _reals(gan, dev)[0]
    state = _to(ensemble.init_many(gan, seeds), dev)
    noise = ensemble.draw_noise_many(gan, ensemble.rngs(seeds, device=dev), B)
    eager, _ = ensemble.make_step(gan)(state, real, noise)
    compiled, _ = ensemble.make_step(gan, compile=True)(state, real, noise)
    ganfn.testing.assert_trees_close(compiled, eager, "compiled vs eager", rtol=1e-4, atol=1e-5)


@DEVICES
def test_adam_foreach_path_equals_per_leaf(dev: str) -> None:
    # On the CPU the foreach path takes Python-float coefficients and addcdiv; on
    # CUDA tensor coefficients and three foreach ops. Either must give the per-leaf
    # (vmapped) path's numbers bit for bit.
    g = torch.Generator().manual_seed(0)
    params = {f"w{i}": torch.randn(s, generator=g).to(dev) for i, s in enumerate([(33, 17), (17,), (5, 3, 2)])}
    grads = [{k: torch.randn(v.shape, generator=g).to(dev) for k, v in params.items()} for _ in range(3)]
    opt = ganfn.optim.adam(1e-2, weight_decay=0.1)
    out = {}
    for fe in (True, False):
        ganfn.optim.FOREACH = fe
        try:
            p, s = params, opt.init(params)
            for gr in grads:
                p, s = opt.update(gr, s, p)
        finally:
            ganfn.optim.FOREACH = True
        out[fe] = (p, s)
    ganfn.testing.assert_trees_equal(out[True], out[False], "foreach vs per-leaf")
    assert _differ(out[True][0], params)


@DEVICES
def test_narrow_linear_under_vmap_equals_nn_linear(dev: str) -> None:
    from torch.func import functional_call, vmap

    from ganfn.models import Linear

    torch.manual_seed(0)
    ours, ref = Linear(2, 64).to(dev), nn.Linear(2, 64).to(dev)
    ref.load_state_dict(ours.state_dict())
    params = {k: torch.randn(3, *v.shape, device=dev) for k, v in ours.named_parameters()}
    x = torch.randn(16, 2, device=dev)
    got = vmap(lambda p: functional_call(ours, p, (x,)))(params)
    want = vmap(lambda p: functional_call(ref, p, (x,)))(params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
