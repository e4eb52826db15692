"""Protocol cards for the figures of the modern presets (r3gan-cifar10, stylegan2-ada-cifar10)
and of the stacked-digits modes: every printed figure says what it depends on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cifar_data import _batches, _write

from ganfn import metrics
from ganfn import presets as P
from ganfn.cli_eval import _fid_reference
from ganfn.data import cifar
from ganfn.data.stacked_digits import stacked_digits
from ganfn.metrics.card import weights_hash


@pytest.fixture
def cifar_root(tmp_path):
    sizes = [3, 3, 3, 3, 3, 7]  # 15 training images, 7 test images
    batches = _batches(np.random.default_rng(0), sizes)
    _write(tmp_path, batches, archive=True)
    return tmp_path, batches


@pytest.mark.parametrize("preset", ["r3gan-cifar10", "stylegan2-ada-cifar10"])
def test_cifar_presets_offline_figure_is_fd_randconv_on_the_test_split(cifar_root, preset):
    root, batches = cifar_root
    cfg = P.merge(P.from_preset(preset), {"data_root": str(root)})
    ev = P.make_evaluator(cfg, 40)
    card, ext = ev.card, metrics.random_conv_extractor()
    assert ev.primary == "FD-RandConv" and not ev.higher_is_better
    assert card.figure == "FD-RandConv" and card.weights_sha256 == ext.weights_sha256 == weights_hash(ext.params)
    assert card.n_generated == 40 and card.n_reference == 7  # the test batch, not the training batches
    assert "CIFAR-10 test split (7 images" in card.reference and "NOT FID" in card.reference
    assert str(root / cifar.ARCHIVE) in card.reference and card.resize == ext.resize
    assert "NOT FID" in card.line()
    test = torch.from_numpy(batches["test_batch"][0].reshape(-1, 3, 32, 32))
    same = ev.fn(cifar.cifar10(root, "test"))["FD-RandConv"]  # the reference itself: 0 up to round-off
    noise = ev.fn(torch.rand(7, 3, 32, 32) * 2 - 1)["FD-RandConv"]
    assert abs(same) < 1e-3 < noise and test.shape[0] == 7


def test_cifar_evaluator_needs_the_files(tmp_path):
    cfg = P.merge(P.from_preset("r3gan-cifar10"), {"data_root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        P.make_evaluator(cfg)


def test_fid_card_names_the_cifar_training_split(cifar_root):
    root, _ = cifar_root
    cfg = P.merge(P.from_preset("stylegan2-ada-cifar10"), {"data_root": str(root)})
    text = _fid_reference(cfg, torch.zeros(15, 3, 32, 32))
    assert "CIFAR-10 training split" in text and "data_batch_1..5" in text and "3x32x32" in text
    assert "50,000 generated" in text and str(root / cifar.ARCHIVE) in text
    folder = P.merge(P.Config(), {"data": str(root)})
    assert _fid_reference(folder, torch.zeros(2, 3, 8, 8)) == "the run's training data, every image once"


def test_stacked_digits_modes_carry_their_card(tmp_path, monkeypatch):
    monkeypatch.setenv("GANFN_CACHE", str(tmp_path))
    ext = metrics.lenet_extractor("digits", cache_dir=tmp_path)
    ev = P.make_evaluator(P.merge(P.Config(), {"data": "stacked_digits"}))
    card = ev.card
    assert card.figure == "modes" and card.weights_sha256 == weights_hash(ext.params)
    assert card.n_generated == 26_000 and card.n_reference == 0
    assert "uniform distribution over the 1,000" in card.reference
    assert "0.0192" in card.reference  # the finite-sample KL of a perfect generator at 26,000: 999 / 52,000
    assert "LeNet(digits)" in card.extractor and "8x8" in card.resize
    small = P.make_evaluator(P.merge(P.Config(), {"data": "stacked_digits"}), 500).card
    assert small.n_generated == 500 and "0.999" in small.reference
    # the card's floor is what real samples score: a perfect generator's KL sits just above it
    kl = ev.fn(stacked_digits(5000, torch.Generator().manual_seed(3)))["kl"]
    assert 999 / (2 * 5000) * 0.8 < kl < 1.0


def test_train_on_cifar10_prints_the_card_with_the_figures(cifar_root, tmp_path, capsys):
    from ganfn import cli

    root, _ = cifar_root
    run = tmp_path / "run"
    assert cli.main(["train", "--data", "cifar10", "--data-root", str(root), "--model", "dcgan", "--width", "8",
                     "--latent-dim", "8", "--steps", "2", "--batch-size", "4", "--eval-every", "2", "--n-eval", "16",
                     "--no-compile", "--no-progress", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "dcgan on cifar10 (3, 32, 32)" in out and "FD-RandConv" in out
    assert out.count("FD-RandConv protocol:") == 2 and "CIFAR-10 test split (7 images" in out  # at the start and end
    assert json.loads((run / "metrics.json").read_text())["protocol"]["figure"] == "FD-RandConv"
    assert cli.main(["eval", str(run), "--n-eval", "12"]) == 0  # ganfn eval: the same card, at its own n
    out = capsys.readouterr().out
    assert "FD-RandConv protocol:" in out and "12 generated vs 7 reference images (CIFAR-10 test split" in out
    assert "FD-RandConv " in out.split("protocol:")[-1]
