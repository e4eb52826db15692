"""--init-from RUN: weights only, fresh optimizers, a shape check that names the mismatch."""
from __future__ import annotations

import json

import pytest
import torch

from ganfn import cli
from ganfn import presets as P
from ganfn.init_from import load_weights, weights_init_from

torch.set_num_threads(1)
TINY = ["--data", "digits", "--width", "4", "--latent-dim", "4", "--batch-size", "8", "--steps", "3",
        "--log-every", "1", "--eval-every", "100", "--image-every", "100", "--checkpoint-every", "3", "--no-progress"]


def _train(tmp_path, name, *extra):
    run = tmp_path / name
    assert cli.main(["train", "--run-dir", str(run), *TINY, *extra]) == 0
    return run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("src"), "a", "--seeds", "2")


def test_weights_only_fresh_optimizers(source):
    w = load_weights(source)
    w1 = load_weights(f"{source}:1")
    assert any(not torch.equal(w["g"][k], w1["g"][k]) for k in w["g"])  # members differ; :k selects
    cfg = P.merge(P.Config(), {"width": 4, "latent_dim": 4, "init_from": str(source)})
    gan = P.build_gan(cfg, (1, 8, 8))
    state = gan.init(5)
    for k, t in state.g.params.items():
        assert torch.equal(t, w["g"][k])
    for k, t in state.d.params.items():
        assert torch.equal(t, w["d"][k])
    assert int(state.step) == 0 and int(state.g.opt["count"]) == 0
    assert all(float(v.abs().sum()) == 0 for v in state.g.opt["mu"].values())  # Adam's moments start at zero
    ema = state.parts["ema"]["params"]  # the EMA starts from the loaded weights
    assert all(torch.equal(ema[k], w["g"][k]) for k in ema)


def test_cli_init_from_trains(source, tmp_path):
    run = _train(tmp_path, "b", "--init-from", f"{source}:1")
    m = json.loads((run / "metrics.json").read_text())
    assert m["config"]["init_from"] == f"{source}:1" and m["last"]["step"] == 3


def test_shape_mismatch_is_named(source):
    cfg = P.merge(P.Config(), {"width": 8, "latent_dim": 4, "init_from": str(source)})
    gan = P.build_gan(cfg, (1, 8, 8))
    with pytest.raises(ValueError, match=r"generator does not match.*shapes differ.*--width"):
        gan.init(0)


def test_bad_sources_are_named(source, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        weights_init_from(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        weights_init_from(tmp_path / "empty")
    with pytest.raises(ValueError, match="no member 7"):
        weights_init_from(f"{source}:7")
