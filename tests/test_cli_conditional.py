"""`ganfn train --conditional`, the conditional presets and `ganfn eval` on a conditional run."""
import json

import numpy as np
import torch
from test_cli import _error, _run  # the same helpers as the unconditional CLI tests

from ganfn import presets as P

torch.set_num_threads(1)
TINY = ["--steps", "4", "--batch-size", "16", "--n-eval", "100", "--eval-every", "2", "--log-every", "1",
        "--no-progress"]


def test_digits_cond_preset_reports_per_class_figures_per_seed(tmp_path, capsys):
    run = tmp_path / "run"
    out = _run(["train", "--preset", "digits-cond", "--seeds", "2", "--width", "4", "--run-dir", str(run), *TINY],
               capsys)
    assert "2 members (vmapped)" in out
    for key in ("FD-LeNet(digits)", "intra-FD-LeNet(digits)", "class-acc-LeNet(digits)"):
        assert key in out
    hist = json.loads((run / "metrics.json").read_text())
    figs = hist["final"]["figures"]
    assert len(figs) == 2 and 0.0 <= figs[0]["class-acc-LeNet(digits)"] <= 1.0
    assert hist["config"]["conditional"] is True
    # one row per class in the sample grid: 10 rows of 7 digits (64 fixed samples rounded up to 70)
    from PIL import Image

    img = Image.open(run / "samples_member00.png")
    assert img.size[1] > img.size[0]  # taller than wide: 10 rows, 7 columns
    out = _run(["eval", str(run), "--n-eval", "100"], capsys)
    assert "member 1:" in out and "class-acc-LeNet(digits)" in out and "intra-FD-LeNet(digits)" in out


def test_conditional_ring_run_and_resume(tmp_path, capsys):
    run = tmp_path / "ring"
    args = ["train", "--data", "ring8", "--conditional", "--model", "mlp", "--hidden", "16", "--depth", "1",
            "--run-dir", str(run), "--checkpoint-every", "2", *TINY]
    out = _run(args, capsys)
    assert "on_class_mode" in json.dumps(json.loads((run / "metrics.json").read_text())["final"])
    out = _run(["train", "--resume", str(run), "--steps", "6", "--no-progress"], capsys)
    assert "resumed from" in out and "at step 4" in out


def test_acgan_preset_runs(tmp_path, capsys):
    out = _run(["train", "--preset", "acgan-digits", "--width", "4", "--run-dir", str(tmp_path / "a"), *TINY], capsys)
    assert "loss acgan" in out
    hist = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert "class-acc-LeNet(digits)" in hist["final"]["figures"][0]


def test_conditional_on_unlabelled_data_is_refused_before_training(tmp_path, capsys):
    from PIL import Image

    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(flat / f"{i}.png")
    err = _error(["train", "--data", str(flat), "--conditional", "--image-size", "8", "--run-dir",
                  str(tmp_path / "r"), *TINY], capsys)
    assert "--conditional needs labelled data" in err and "folder named after its class" in err
    assert not (tmp_path / "r").exists()  # nothing was written


def test_conditional_model_errors(tmp_path, capsys):
    err = _error(["train", "--model", "acgan", "--run-dir", str(tmp_path / "r"), *TINY], capsys)
    assert "acgan is class-conditional" in err and "--conditional" in err
    err = _error(["train", "--loss", "acgan", "--run-dir", str(tmp_path / "r"), *TINY], capsys)
    assert "num_classes" in err


def test_presets_build_conditional_setups():
    for name, model in (("digits-cond", "ProjectionDiscriminator"), ("acgan-digits", "ACGANDiscriminator")):
        cfg = P.merge(P.from_preset(name), {"width": 4})
        gan, (x, y), ev = P.build(cfg)
        assert gan.num_classes == 10 and type(gan.discriminator).__name__ == model
        assert x.shape[0] == y.shape[0] == 1400 and ev is not None
    assert P.PRESETS["digits-cond"]["seeds"] >= 4
