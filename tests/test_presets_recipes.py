"""The presets r3gan-cifar10 and stylegan2-ada-cifar10 build their GAN from
ganfn.recipes, with the papers' schedules, and refuse options the recipe has no
place for (tiny widths, 16 px)."""
from __future__ import annotations

import math

import pytest
import torch

import ganfn
from ganfn import presets as P

torch.set_num_threads(1)
SHAPE = (3, 16, 16)


def _cfg(name: str, **kw):
    small = {"width": 8} if name.startswith("r3gan") else {"width": 4, "latent_dim": 4}
    return P.merge(P.from_preset(name), {**small, "batch_size": 4, "steps": 40, **kw})


def _cos(a: float, b: float, s: int, n: int) -> float:
    return b + (a - b) * (1 + math.cos(math.pi * min(s, n) / n)) / 2


def test_r3gan_cifar10_builds_the_recipe_with_schedules_over_the_run():
    gan = P.build_gan(_cfg("r3gan-cifar10", penalty_weight=0.2, lr_g=4e-4), SHAPE)
    assert [p.name for p in gan.parts] == ["diffaugment", "r1", "r2", "ema"]
    hp = gan.init(0).hparams
    for key in ("r1_weight", "r2_weight"):  # gamma's start from --penalty-weight, its end a tenth, over the 40 steps
        got = ganfn.schedules.at("cosine", {f: hp[f"{key}.{f}"] for f in ("start", "end", "begin", "steps")}, 10)
        assert float(got) == pytest.approx(_cos(0.2, 0.02, 10, 40))
    state = gan.init(0)
    for which, lr in (("g", 4e-4), ("d", 2e-4)):
        opt = getattr(gan, f"{which}_optimizer")
        o = getattr(state, which).opt
        assert float(opt.lr({**o, "count": torch.tensor(20)})) == pytest.approx(_cos(lr, lr / 4, 20, 40))
        assert float(o["hp"]["b2.start"]) == 0.9 and float(o["hp"]["b2.end"]) == 0.99
    rng = torch.Generator().manual_seed(0)
    for _ in range(2):
        state, m = gan.train_step(state, torch.rand(4, *SHAPE, generator=rng) * 2 - 1, gan.draw_noise(rng, 4))
    assert all(math.isfinite(float(v)) for v in m.values() if v.dim() == 0)


def test_r3gan_cifar10_options_turn_off_augmentation_and_ema():
    gan = P.build_gan(_cfg("r3gan-cifar10", augment="none", ema_decay=0.0), SHAPE)
    assert [p.name for p in gan.parts] == ["r1", "r2"]


@pytest.mark.parametrize("batch", [4, 64])
def test_stylegan2_ada_cifar10_builds_the_recipe_and_keeps_the_half_life_in_images(batch):
    gan = P.build_gan(_cfg("stylegan2-ada-cifar10", batch_size=batch), SHAPE)
    assert [p.name for p in gan.parts] == ["ada", "r1", "ema"]
    state = gan.init(0)
    assert int(state.parts["r1"]["count"]) == 0 and float(state.hparams["ada_target"]) == 0.6
    hp = {k: state.hparams[k] for k in ("ema_decay", "ema_start", "ema_rampup")}
    decay = float(ganfn.parts.ema_decay(hp, torch.tensor(10**9), warmup=False))
    assert decay == pytest.approx(0.5 ** (batch / 500_000), rel=1e-9)  # 500 kimg at any batch size
    assert float(gan.d_optimizer.lr(state.d.opt)) == 0.0025


@pytest.mark.parametrize("name,kw,flag", [
    ("r3gan-cifar10", {"grad_clip": 1.0}, "--grad-clip"), ("r3gan-cifar10", {"penalty": "gp"}, "--penalty"),
    ("stylegan2-ada-cifar10", {"optimizer": "rmsprop", "lecam": 0.1}, "--optimizer, --lecam"),
    ("stylegan2-ada-cifar10", {"ada_target": None}, "--ada-target"), ("r3gan-cifar10", {"r1_every": 4}, "--r1-every"),
])
def test_recipe_presets_refuse_options_the_recipe_has_no_place_for(name, kw, flag):
    with pytest.raises(ValueError, match=flag):
        P.build_gan(_cfg(name, **kw), SHAPE)


def test_other_presets_still_build_from_their_options():
    gan = P.build_gan(P.merge(P.from_preset("r3gan"), {"width": 8}), (1, 8, 8))
    assert "diffaugment" not in [p.name for p in gan.parts] and {"r1", "r2"} <= {p.name for p in gan.parts}


def test_cli_trains_and_resumes_a_recipe_preset(tmp_path, capsys):
    import json

    from ganfn import cli

    run = tmp_path / "run"
    tiny = ["--data", "digits", "--width", "8", "--batch-size", "8", "--n-eval", "100", "--eval-every", "2",
            "--log-every", "1", "--no-progress", "--checkpoint-every", "2"]
    assert cli.main(["train", "--preset", "r3gan-cifar10", "--steps", "2", "--run-dir", str(run), *tiny]) == 0
    assert json.loads((run / "config.json").read_text())["preset"] == "r3gan-cifar10"
    # The resumed run rebuilds the recipe's GAN (its scheduled hyperparameters match the checkpoint's).
    assert cli.main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["preset"] == "r3gan-cifar10"
    assert "resumed from" in capsys.readouterr().out
