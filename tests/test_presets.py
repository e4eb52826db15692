"""Each preset builds the setup its reference describes and runs a few steps."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ganfn import cli
from ganfn import presets as P

torch.set_num_threads(1)
FEW = ["--steps", "2", "--n-eval", "100", "--no-progress", "--checkpoint-every", "0"]


def _data_available(cfg):
    try:
        P.load_data(cfg)
        return True
    except (FileNotFoundError, ValueError, ImportError, RuntimeError):
        return False


def _dogs(tmp_path):
    root = tmp_path / "dogs"
    rng = np.random.default_rng(0)
    for breed in ("n02085620-Chihuahua", "n02085782-Japanese_spaniel"):
        (root / breed).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, size=(70 + 10 * i, 90, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / breed / f"{breed}_{i}.jpg")
    return root


@pytest.mark.parametrize("name", sorted(P.PRESETS))
def test_preset_runs_a_few_steps(name, tmp_path, capsys):
    cfg = P.from_preset(name)
    extra = ["--batch-size", "8"]
    if name == "dcgan-dogs":
        extra = ["--data", str(_dogs(tmp_path)), "--width", "8", "--batch-size", "4"]
    elif not _data_available(cfg):
        extra += ["--data", "digits"]  # small stand-in when the preset's data set is not on this machine
    if cfg.model in ("r3gan", "stylegan2"):
        extra += ["--width", "8", "--latent-dim", "8"]  # the papers' widths are GPU-sized
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", name, "--run-dir", str(run), *FEW, *extra]) == 0
    out = capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    assert m["config"]["preset"] == name and m["last"]["step"] == 2
    assert all(np.all(np.isfinite(m["last"][k])) for k in ("d_loss", "g_loss")), out  # a float, or one per seed
    assert (run / "samples.png").is_file()


def _gan(name, **over):
    cfg = P.merge(P.from_preset(name), {"data": "digits", **over})
    return cfg, P.build_gan(cfg, (1, 8, 8) if cfg.model != "dcgan" or cfg.image_size in (None, 8) else (3, 64, 64))


def test_presets_match_their_references():
    cfg, gan = _gan("wgan-clip")
    st = gan.init(0)
    assert gan.loss.name == "wasserstein" and gan.n_critic == 5 and gan.d_optimizer.name == "rmsprop"
    assert float(st.hparams["clip_value"]) == pytest.approx(0.01) and float(st.d.opt["hp"]["lr"]) == pytest.approx(5e-5)
    cfg, gan = _gan("wgan-gp")
    st = gan.init(0)
    assert gan.n_critic == 5 and float(st.hparams["gp_weight"]) == 10.0
    assert float(st.d.opt["hp"]["b1"]) == 0.0 and float(st.d.opt["hp"]["b2"]) == pytest.approx(0.9)
    cfg, gan = _gan("lsgan")
    assert gan.loss.name == "least_squares"
    cfg, gan = _gan("mlp-mnist")
    st = gan.init(0)
    assert cfg.model == "mlp" and float(st.hparams["real_label"]) == pytest.approx(0.9)
    assert float(st.g.opt["hp"]["lr"]) == pytest.approx(2e-4) and float(st.g.opt["hp"]["b1"]) == 0.5
    cfg, gan = _gan("lightning-bce")
    st = gan.init(0)
    assert gan.loss.name == "non_saturating" and "adamw" in gan.d_optimizer.name
    later = {**st.d.opt, "count": torch.tensor(250)}
    assert float(gan.d_optimizer.lr(later)) == pytest.approx(2e-4 * 0.99 ** 2)  # decays every 100 updates
    cfg, gan = _gan("dcgan-dogs", image_size=64, width=8)
    st = gan.init(0)
    assert gan.sample_shape == (3, 64, 64) and float(st.hparams["real_label"]) == 0.5
    assert float(st.g.opt["hp"]["lr"]) == pytest.approx(2e-4) and float(st.d.opt["hp"]["lr"]) == pytest.approx(1e-4)


def test_unknown_preset_and_missing_folder(capsys, tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        P.from_preset("nope")
    with pytest.raises(SystemExit):
        cli.main(["train", "--preset", "dcgan-dogs", "--data", str(tmp_path / "dogs"), *FEW])
    assert str(tmp_path / "dogs") in capsys.readouterr().err


def test_ring8_hinge_preset_is_the_quality_benchmark_setup():
    # bench/quality.py measures issue 6's ring8 target with exactly this preset.
    cfg = P.from_preset("ring8-hinge")
    gan = P.build_gan(cfg, (2,))
    assert gan.loss.name == "hinge" and [p.name for p in gan.parts] == ["r1", "ema"]
    assert gan.defaults["ema_decay"] == 0.999
    state = gan.init(0)
    assert float(state.hparams["r1_weight"]) == 0.1 and float(state.d.opt["hp"]["lr"]) == 2e-3
    # linear decay to 0 over the run: half-way the learning rate is halved
    half = {**state.d.opt, "count": torch.tensor(cfg.steps // 2)}
    assert float(gan.d_optimizer.lr(half)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="one learning-rate schedule"):
        P.build_gan(P.merge(cfg, {"lr_decay": 0.99}), (2,))
