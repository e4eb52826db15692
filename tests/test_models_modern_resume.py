"""R3GAN and StyleGAN2 in fit(): a stacked run on stacked digits resumes bit for bit."""
from __future__ import annotations

import pytest
import torch

import ganfn
from ganfn import data, optim, penalties
from ganfn.loop import fit
from ganfn.models import r3gan, stylegan2
from ganfn.tree import leaves

torch.set_num_threads(1)
QUIET = {"progress": False, "print_fn": lambda s: None}


def _gan(name):
    if name == "r3gan":
        G, D = r3gan(8, 3, latent_dim=4, width=8, blocks=1, group_channels=4)
        parts = [penalties.as_part(penalties.r1(0.05)), penalties.as_part(penalties.r2(0.05))]
        return ganfn.GAN(G, D, latent_dim=4, loss="rpgan", parts=parts,
                         g_optimizer=optim.adam(2e-4, (0.0, 0.9)), d_optimizer=optim.adam(2e-4, (0.0, 0.9)))
    G, D = stylegan2(8, 3, z_dim=4, w_dim=4, mapping_layers=1, width=4, residual=False, mbstd_group=32)
    return ganfn.GAN(G, D, latent_dim=G.latent_dim, parts=[penalties.as_part(penalties.r1(0.01, every=2))],
                     g_optimizer=optim.adam(2.5e-3, (0.0, 0.99)), d_optimizer=optim.adam(2.5e-3, (0.0, 0.99)))


@pytest.mark.parametrize("name", ["r3gan", "stylegan2"])
def test_stacked_run_resumes_bit_identically(tmp_path, name):
    gan, sampler = _gan(name), data.stacked_digits_sampler(8)
    kw = dict(steps=4, batch_size=8, log_every=1, eval_every=100, seeds=[0, 1], checkpoint_every=None, **QUIET)
    full, _ = fit(gan, sampler, run_dir=tmp_path / "full", **kw)
    fit(gan, sampler, run_dir=tmp_path / "half", **{**kw, "steps": 2})
    resumed, _ = fit(gan, sampler, run_dir=tmp_path / "half", resume=True, **kw)
    assert all(torch.equal(a, b) for a, b in zip(leaves(full), leaves(resumed), strict=True))
    first = ganfn.unstack(full)[0]
    second = ganfn.unstack(full)[1]
    assert int(first.step) == 4 and any(not torch.equal(a, b) for a, b in
                                        zip(leaves(first.g.params), leaves(second.g.params), strict=True))
