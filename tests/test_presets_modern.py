"""The r3gan-cifar10 and stylegan2-ada-cifar10 presets build the papers' setups."""
from __future__ import annotations

import math

import pytest

from ganfn import presets as P
from ganfn.models.r3gan import R3GANDiscriminator, R3GANGenerator, _Block
from ganfn.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator


def test_r3gan_cifar10_is_the_official_cifar10_config():
    cfg = P.from_preset("r3gan-cifar10")
    got = (cfg.loss, cfg.penalty, cfg.penalty_weight, cfg.beta1, cfg.beta2, cfg.batch_size)
    assert got == ("rpgan", "r1+r2", 0.05, 0.0, 0.9, 512)
    gan = P.build_gan(P.merge(cfg, {"width": 32}), (3, 32, 32))  # the paper's 768 is GPU-sized
    G, D = gan.generator, gan.discriminator
    assert isinstance(G, R3GANGenerator) and isinstance(D, R3GANDiscriminator)
    assert len(G.stages) == 4 and sum(isinstance(m, _Block) for m in G.modules()) == 8  # 4x4 .. 32x32, 2 blocks each
    assert G.latent_dim == 64 and gan.latent_shape == (64,)
    assert {p.name for p in gan.parts} >= {"r1", "r2"}


def test_stylegan2_ada_cifar10_is_the_official_cifar_config():
    cfg = P.from_preset("stylegan2-ada-cifar10")
    got = (cfg.lr_g, cfg.beta1, cfg.beta2, cfg.batch_size, cfg.r1_every, cfg.penalty_weight)
    assert got == (0.0025, 0.0, 0.99, 64, 16, 0.01)
    assert cfg.ema_decay == pytest.approx(0.5 ** (64 / 500_000)) and cfg.ada_target == 0.6
    gan = P.build_gan(P.merge(cfg, {"width": 8, "latent_dim": 16}), (3, 32, 32))
    G, D = gan.generator, gan.discriminator
    assert isinstance(G, StyleGAN2Generator) and isinstance(D, StyleGAN2Discriminator)
    assert len(G.mapping) == 2 and not D.residual and D.mbstd.group_size == 32
    assert gan.latent_shape == (16 + sum(math.prod(s) for s in G.noise_shapes),)


def test_stylegan2_is_unconditional():
    cfg = P.merge(P.from_preset("stylegan2-ada-cifar10"), {"width": 8, "conditional": True})
    with pytest.raises(ValueError, match="unconditional"):
        P.build_gan(cfg, (3, 8, 8), 10)
