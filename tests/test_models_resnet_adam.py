"""The SNGAN ResNet pair under Adam: no parameter with a zero true gradient, so
vmapped members stay with their single runs.

The equivalence proved: G and D at width 32 on 8x8 images, batch 4, Adam
(2e-4, betas (0, 0.9)), spectral norm on D: after 2 steps no parameter of 3
vmapped members differs from its single run by more than 1e-5 (measured
4e-7; before G's biases ahead of batch norms were removed, 6e-4 at
``blocks.0.c1.bias``)."""
from __future__ import annotations

import pytest
import torch

import ganfn
import ganfn.models as M
from ganfn import optim
from ganfn.testing.drift import dead_parameters, member_drift

torch.set_num_threads(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("classes", [None, 3])
def test_resnet_generator_has_no_dead_parameters(classes):
    G = M.ResNetGenerator(4, 8, 3, 8, classes, generator=gen(0))
    y = () if classes is None else (torch.tensor([0, 1, 2, 0, 1, 2]),)
    assert dead_parameters(G, torch.randn(6, 4, generator=gen(1)), *y) == []
    D = M.ResNetDiscriminator(8, 3, 8, classes, generator=gen(0))
    assert dead_parameters(D, torch.randn(6, 3, 8, 8, generator=gen(1)), *y) == []


def test_dead_parameters_catches_a_bias_before_batch_norm():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    assert dead_parameters(net, torch.randn(8, 3, generator=gen(0))) == ["0.bias"]
    assert net[0].weight.dtype == torch.float32  # the check ran on a copy


def test_vmapped_resnet_members_do_not_drift_under_adam():
    G, D = M.ResNetGenerator(16, 8, 3, 32), M.ResNetDiscriminator(8, 3, 32)
    gan = ganfn.GAN(G, D, latent_dim=16, g_optimizer=optim.adam(2e-4, (0.0, 0.9)),
                    d_optimizer=optim.adam(2e-4, (0.0, 0.9)), parts=ganfn.recipes.sngan())  # SNGAN: spectral norm on D
    drift = member_drift(gan, [0, 1, 2], steps=2)
    worst = max(drift, key=drift.get)
    assert drift[worst] < 1e-5, f"{worst} drifts by {drift[worst]:.2e}"
