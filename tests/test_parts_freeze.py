"""freeze_d: D's first blocks keep their weights, alone and under vmap."""
from __future__ import annotations

import pytest
import torch

import ganfn
import ganfn.models as M
from ganfn import optim
from ganfn.parts.freeze import d_block_prefixes, freeze_d
from ganfn.testing import assert_vmap_equivalent

torch.set_num_threads(1)


def _gan(prefixes):
    G, D = M.r3gan(8, 3, latent_dim=4, width=8, blocks=1, group_channels=4)
    return ganfn.GAN(G, D, latent_dim=4, g_optimizer=optim.adam(1e-2, (0.0, 0.9)),
                     d_optimizer=optim.adam(1e-2, (0.0, 0.9)), parts=[freeze_d(prefixes)])


def _steps(gan, state, n=3):
    rng = torch.Generator().manual_seed(1)
    for _ in range(n):
        state, _ = gan.train_step(state, torch.randn(4, 3, 8, 8, generator=rng), gan.draw_noise(rng, 4))
    return state


def test_frozen_blocks_keep_their_weights_and_the_rest_trains():
    gan = _gan(d_block_prefixes(M.r3gan(8, 3, width=8, blocks=1, group_channels=4)[1], 1))
    s0 = gan.init(0)
    s1 = _steps(gan, s0)
    frozen = [k for k in s0.d.params if k.startswith(("inp.", "stages.0."))]
    assert frozen and all(torch.equal(s0.d.params[k], s1.d.params[k]) for k in frozen)
    moved = [k for k in s0.d.params if k not in frozen and not torch.equal(s0.d.params[k], s1.d.params[k])]
    assert "head.weight" in moved and any(k.startswith("stages.1.") for k in moved)


def test_frozen_under_vmap_equals_single_runs():
    assert_vmap_equivalent(_gan(["inp", "stages.0"]), [0, 1], steps=2, batch_size=4)


def test_unknown_prefix_is_named():
    with pytest.raises(ValueError, match=r"no discriminator parameter under 'stage'.*inp"):
        _gan(["stage"]).init(0)
    with pytest.raises(ValueError, match="at least one"):
        freeze_d([])


@pytest.mark.parametrize("make, k, want", [
    (lambda: M.stylegan2(16, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4)[1], 1,
     ["from_rgb", "conv0.0", "conv1.0", "skip.0"]),
    (lambda: M.ResNetDiscriminator(8, 3, 4), 2, ["blocks.0", "blocks.1"]),
    (lambda: M.r3gan(16, 3, width=[8, 8, 4], blocks=1, group_channels=4)[1], 1, ["inp", "stages.0", "widen.0"]),
])
def test_block_prefixes_name_real_parameters(make, k, want):
    d = make()
    got = d_block_prefixes(d, k)
    assert got == want
    names = [n for n, _ in d.named_parameters()]
    assert all(any(n.startswith(p + ".") for n in names) for p in got)
    with pytest.raises(ValueError, match=">= 1"):
        d_block_prefixes(d, 0)
