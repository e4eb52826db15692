"""The data-efficiency options of ganfn train: --augment, --ada-target, --r1-every,
--lecam, --ema-rampup, and the r3gan preset."""
from __future__ import annotations

import pytest
import torch

from ganfn import cli
from ganfn import presets as P

torch.set_num_threads(1)


def _cfg(*argv):
    parser = cli.make_parser()
    cfg, _ = cli._config_from_args(parser.parse_args(["train", *argv]), parser)
    return cfg


def _part(gan, name):
    return {p.name: p for p in gan.parts}.get(name)


def test_flags_build_the_parts():
    cfg = _cfg("--augment", "color,translation,cutout", "--ada-target", "0.6", "--penalty", "r1", "--penalty-weight",
               "1",
               "--r1-every", "16", "--lecam", "0.3", "--ema-rampup", "0.05")
    assert (cfg.augment, cfg.ada_target, cfg.r1_every, cfg.lecam, cfg.ema_rampup) == \
        ("color,translation,cutout", 0.6, 16, 0.3, 0.05)
    gan = P.build_gan(cfg, (1, 8, 8))
    state = gan.init(0)
    assert _part(gan, "ada") is not None and _part(gan, "diffaugment") is None
    assert float(state.hparams["ada_target"]) == 0.6
    assert float(state.hparams["lecam_weight"]) == pytest.approx(0.3)
    assert float(state.hparams["ema_rampup"]) == 0.05
    assert int(state.parts["r1"]["count"]) == 0  # the lazy R1 keeps a counter
    # one step runs, and the lazy R1 is due on D update 0
    real = torch.rand(4, 1, 8, 8) * 2 - 1
    new, m = gan.train_step(state, real, gan.draw_noise(torch.Generator().manual_seed(0), 4))
    assert int(new.parts["r1"]["count"]) == 1 and torch.isfinite(m["penalty"])


def test_augment_alone_is_diffaugment_and_bad_combinations_fail():
    gan = P.build_gan(_cfg("--augment", "translation"), (1, 8, 8))
    assert _part(gan, "diffaugment") is not None and _part(gan, "ada") is None
    assert _part(P.build_gan(_cfg(), (1, 8, 8)), "diffaugment") is None
    with pytest.raises(ValueError, match="--r1-every needs a gradient penalty"):
        P.build_gan(_cfg("--r1-every", "4"), (1, 8, 8))
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        P.build_gan(_cfg("--augment", "blur"), (1, 8, 8))


def test_r3gan_preset_is_rpgan_with_r1_and_r2():
    gan = P.build_gan(P.from_preset("r3gan"), (1, 8, 8))
    assert gan.loss.name == "rpgan"
    assert {p.name for p in gan.parts} >= {"r1", "r2", "ema"}
