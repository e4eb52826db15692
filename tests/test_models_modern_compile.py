"""torch.compile(vmap(train_step)) for R3GAN and StyleGAN2 equals the eager
vmapped step. Slow: about 165 s of compilation per model on a 2-core CPU."""
from __future__ import annotations

import pytest
import torch

import ganfn
from ganfn import optim, penalties
from ganfn.models import r3gan, stylegan2
from ganfn.testing import assert_trees_close

torch.set_num_threads(1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r3gan", "stylegan2"])
def test_compiled_vmapped_step_equals_eager(name):
    if name == "r3gan":
        G, D = r3gan(8, 3, latent_dim=4, width=8, blocks=1, group_channels=4)
    else:
        G, D = stylegan2(8, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4)
    gan = ganfn.GAN(G, D, latent_dim=G.latent_dim, loss="rpgan" if name == "r3gan" else "non_saturating",
                    g_optimizer=optim.adam(2e-4, (0.0, 0.9)), d_optimizer=optim.adam(2e-4, (0.0, 0.9)),
                    parts=[penalties.as_part(penalties.r1(0.1))])
    states = ganfn.stack([gan.init(s) for s in range(2)])
    real = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = ganfn.stack([gan.draw_noise(torch.Generator().manual_seed(s), 4) for s in range(2)])
    eager = torch.func.vmap(gan.train_step)(states, real, noise)
    compiled = torch.compile(lambda s, r, n: torch.func.vmap(gan.train_step)(s, r, n), fullgraph=True)
    out = compiled(states, real, noise)
    assert_trees_close(eager[0], out[0], "compiled vs eager state", rtol=1e-4, atol=1e-5)
    assert_trees_close(eager[1], out[1], "compiled vs eager metrics", rtol=1e-4, atol=1e-5)
