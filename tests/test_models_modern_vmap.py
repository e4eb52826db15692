"""R3GAN and StyleGAN2 forward passes under vmap over stacked members equal
each member's own forward, for any number of members and batch size
(hypothesis), including minibatch standard deviation's groups."""
from __future__ import annotations

import copy

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, stack_module_state, vmap

from ganfn.models import r3gan, stylegan2

torch.set_num_threads(1)


def _pairs(name: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if name == "r3gan":
        return r3gan(8, 3, latent_dim=4, width=8, blocks=1, group_channels=4, generator=g)
    return stylegan2(8, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4, mbstd_group=4, generator=g)


def _perturb(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-zero residual branches and noise strengths, as after training
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net


@given(name=st.sampled_from(["r3gan", "stylegan2"]), members=st.integers(1, 3), batch=st.integers(1, 6),
       seed=st.integers(0, 1000))
@settings(max_examples=12, deadline=None)
def test_vmapped_forward_equals_each_member(name, members, batch, seed):
    nets = [_pairs(name, seed + i) for i in range(members)]
    for which in (0, 1):  # G, then D
        mods = [_perturb(n[which], seed + 10 * i) for i, n in enumerate(nets)]
        params, buffers = stack_module_state(mods)
        base = copy.deepcopy(mods[0]).to("meta")
        shape = (mods[0].latent_dim,) if which == 0 else mods[0].sample_shape
        x = torch.randn(members, batch, *shape, generator=torch.Generator().manual_seed(seed))
        out = vmap(lambda p, b, xi, base=base: functional_call(base, (p, b), (xi,)))(params, buffers, x)
        for i, m in enumerate(mods):
            torch.testing.assert_close(out[i], m(x[i]), rtol=1e-5, atol=1e-5)
