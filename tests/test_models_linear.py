"""ganfn.models.Linear: under vmap a narrow-input layer carries its bias in the
product, equal to nn.Linear to round-off in outputs and gradients (double
backward included); outside vmap it is nn.Linear exactly; and the vmapped
ensemble of ganfn's MLPs still equals single runs."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, grad, vmap

import ganfn
from ganfn import ensemble
from ganfn.models import Linear, MLPDiscriminator, MLPGenerator
from ganfn.models import linear as linear_mod
from ganfn.models.linear import NARROW_RATIO
from ganfn.testing import assert_pure

torch.set_num_threads(1)


def _pair(n_in: int, n_out: int, bias: bool, seed: int) -> tuple[Linear, nn.Linear]:
    torch.manual_seed(seed)
    ours = Linear(n_in, n_out, bias=bias).double()
    ref = nn.Linear(n_in, n_out, bias=bias).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@contextlib.contextmanager
def bias_column_calls():
    """A list that grows by one on each call of the bias-column form."""
    calls = []
    real = linear_mod.bias_column_linear
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(linear_mod, "bias_column_linear", lambda *a: calls.append(1) or real(*a))
        yield calls


@pytest.fixture
def spy():
    with bias_column_calls() as calls:
        yield calls


def _members(layer: nn.Module, S: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(S, *v.shape, dtype=v.dtype, generator=gen) for k, v in layer.named_parameters()}


@given(n_in=st.integers(1, 12), n_out=st.integers(1, 48), lead=st.lists(st.integers(1, 4), max_size=2),
       S=st.integers(1, 3), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_vmapped_equals_nn_linear_in_outputs_and_gradients(n_in, n_out, lead, S, bias, seed):
    ours, ref = _pair(n_in, n_out, bias, seed)
    params = _members(ours, S, seed)
    x = torch.randn(*lead, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    g = torch.randn(S, *lead, n_out, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 2))

    def run(module):
        def member(p, x, g):
            y, vjp = torch.func.vjp(lambda p, x: functional_call(module, p, (x,)), p, x)
            return y, vjp(g)
        return vmap(member, in_dims=(0, None, 0))(params, x, g)

    (y, (gp, gx)), (y_ref, (gp_ref, gx_ref)) = run(ours), run(ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    for k in gp_ref:
        torch.testing.assert_close(gp[k], gp_ref[k], rtol=1e-12, atol=1e-12)


@given(n_in=st.integers(1, 12), n_out=st.integers(1, 48), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_the_form_follows_the_shape_and_vmap(n_in, n_out, bias, seed):
    # The bias column only for a narrow layer with a bias, and only under vmap;
    # outside vmap the layer is nn.Linear bit for bit.
    ours, ref = _pair(n_in, n_out, bias, seed)
    x = torch.randn(3, n_in, dtype=torch.float64)
    with bias_column_calls() as calls:
        assert torch.equal(ours(x), ref(x)) and not calls
        vmap(lambda p: functional_call(ours, p, (x,)))(_members(ours, 2, seed))
    assert bool(calls) == (bias and n_out >= NARROW_RATIO * n_in)


def test_narrow_layer_adds_no_bias_pass_under_vmap(spy):
    # Under vmap the bias-column form is one batched product: no elementwise add
    # over the [S, B, out] output (the pass it exists to save).
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.adds = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor) and isinstance(out, torch.Tensor):
                self.adds.append(tuple(out.shape))
            return out

    layer = Linear(2, 64)
    params = {k: v.detach().expand(5, *v.shape).clone() for k, v in layer.named_parameters()}
    x = torch.randn(32, 2)
    with Ops() as ops:
        out = vmap(lambda p: functional_call(layer, p, (x,)))(params)
    assert out.shape == (5, 32, 64) and spy
    assert (5, 32, 64) not in ops.adds
    plain = nn.Linear(2, 64)
    with Ops() as ops:
        vmap(lambda p: functional_call(plain, p, (x,)))(params)
    assert (5, 32, 64) in ops.adds  # the reference does pay it: the check can fail


@given(S=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_vmapped_double_backward_equals_nn_linear(S, seed):
    # A gradient penalty: d/dparams of |d D(x)/dx|, per member.
    ours, ref = _pair(2, 16, True, seed)
    gen = torch.Generator().manual_seed(seed)
    params = {k: torch.randn(S, *v.shape, dtype=torch.float64, generator=gen) for k, v in ours.named_parameters()}
    x = torch.randn(6, 2, dtype=torch.float64, generator=gen)

    def penalty(module):
        def fn(p):
            gx = grad(lambda xx: F.leaky_relu(functional_call(module, p, (xx,)), 0.2).pow(2).sum())(x)
            return (gx.norm() - 1) ** 2
        return vmap(grad(fn))(params)

    got, want = penalty(ours), penalty(ref)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12)


def test_gradcheck_and_gradgradcheck():
    layer = Linear(3, 12).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    fn = linear_mod.bias_column_linear
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_pure(spy):
    layer = Linear(2, 16)
    params = _members(layer, 3, 0)
    x = torch.randn(8, 2)
    assert_pure(lambda p, x: vmap(lambda q: functional_call(layer, q, (x,)))(p), params, x, modules=layer)
    assert spy


def test_state_dict_is_nn_linears():
    ours, ref = _pair(2, 16, True, 0)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    fresh = Linear(2, 16)
    fresh.load_state_dict(nn.Linear(2, 16).state_dict())


def test_mixture_gan_members_equal_single_runs(spy):
    # ring8's models (2-D samples, an 8-D latent: both first layers narrow)
    # through the vmapped ensemble step, against each member's own single run.
    G, D = MLPGenerator(8, 2, hidden=64, out_act=None), MLPDiscriminator(2, hidden=64)
    gan = ganfn.GAN(G, D, latent_dim=8, loss="non_saturating")
    seeds, B = [0, 1, 2], 32
    real = torch.randn(B, 2, generator=torch.Generator().manual_seed(9))
    step = ensemble.make_step(gan)
    stacked, rngs = ensemble.init_many(gan, seeds), ensemble.rngs(seeds)
    singles, single_rngs = [gan.init(s) for s in seeds], ensemble.rngs(seeds)
    for _ in range(3):
        stacked, _ = step(stacked, real, ensemble.draw_noise_many(gan, rngs, B))
        singles = [gan.train_step(s, real, gan.draw_noise(r, B))[0] for s, r in zip(singles, single_rngs, strict=True)]
    assert spy
    for i, single in enumerate(singles):
        for net in ("d", "g"):
            for k, v in getattr(single, net).params.items():
                # round-off: a batched product need not round as the single one (bench/README_vmap.md)
                torch.testing.assert_close(getattr(stacked, net).params[k][i], v, rtol=1e-5, atol=1e-7)
    assert not torch.equal(stacked.g.params["net.0.weight"][0], stacked.g.params["net.0.weight"][1])
