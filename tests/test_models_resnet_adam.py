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
from ganfn.testing.drift import assert_no_member_drift, dead_parameters

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
    assert_no_member_drift(gan, [0, 1, 2], steps=2, atol=1e-5)


def test_member_drift_check_names_a_bias_before_batch_norm():
    """The broken input the drift check must catch: under Adam, a bias right before a batch norm
    (true gradient zero) walks away from its single run."""
    G = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    D = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.LeakyReLU(0.2), torch.nn.Linear(32, 1),
                            torch.nn.Flatten(0))
    gan = ganfn.GAN(G, D, latent_dim=4, g_optimizer=optim.adam(2e-4, (0.0, 0.9)),
                    d_optimizer=optim.adam(2e-4, (0.0, 0.9)))
    with pytest.raises(AssertionError, match=r"g\.0\.bias drifts by"):
        assert_no_member_drift(gan, [0, 1, 2], steps=2, batch_size=8)
