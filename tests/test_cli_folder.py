"""`ganfn train` / `ganfn eval` on the user's own image folder: defaults from the headers,
unreadable files, the folder's offline figure and its protocol card."""
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganfn import cli, presets_folder
from ganfn import data as D

torch.set_num_threads(1)
TINY = ["--steps", "3", "--batch-size", "4", "--n-eval", "16", "--eval-every", "3", "--log-every", "1",
        "--no-progress", "--data-workers", "0"]


def _folder(root: Path, n: int = 8, size: int = 8, mode: str = "L", h: int | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (h or size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(root / f"{i:02d}.png")
    return root


def _train(argv, capsys):
    code = cli.main(["train", *argv, *TINY])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _fail(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *argv, *TINY])
    assert e.value.code == 2
    return capsys.readouterr()


def _shape(run: Path) -> tuple:
    cfg = json.loads((run / "config.json").read_text())
    return cfg["channels"], cfg["image_size"]


def test_grey_8px_folder_stays_one_channel_at_the_models_smallest_size(tmp_path, capsys):
    imgs = _folder(tmp_path / "grey")
    out = _train(["--data", str(imgs), "--run-dir", str(tmp_path / "run")], capsys)
    assert "(1, 8, 8)" in out and "chosen for the data" not in out
    assert "8 images, 1 channel (grey: L), 8x8" in out
    assert "8x8 -> 8x8 (smallest size dcgan takes >= 8)" in out
    assert _shape(tmp_path / "run") == (1, 8)


@pytest.mark.parametrize("model,side,want", [("dcgan", 12, 16), ("sngan", 20, 32), ("mlp", 12, 12), ("dcgan", 100, 64)])
def test_size_is_the_smallest_the_model_takes_not_below_the_images(tmp_path, capsys, model, side, want):
    imgs = _folder(tmp_path / "rgb", n=4, size=side, mode="RGB", h=side + 3)  # non-square: the short side counts
    out = _train(["--data", str(imgs), "--model", model, "--run-dir", str(tmp_path / "run")], capsys)
    assert f"{side}x{side} -> {want}x{want}" in out and f"(3, {want}, {want})" in out
    assert _shape(tmp_path / "run") == (3, want)
    assert ("capped at 64" in out) == (side > 64)


def test_channels_max_images_and_image_size_override_the_scan(tmp_path, capsys):
    imgs = _folder(tmp_path / "grey", n=6)
    out = _train(["--data", str(imgs), "--channels", "3", "--max-images", "5", "--image-size", "16",
                  "--run-dir", str(tmp_path / "run")], capsys)
    assert "5 images" in out and "train as 3 channels (given)" in out and "(3, 16, 16)" in out
    err = _fail(["--data", str(imgs), "--channels", "2", "--run-dir", str(tmp_path / "r2")], capsys).err
    assert "channels must be 1 or 3" in err
    err = _fail(["--data", str(imgs), "--max-images", "0", "--run-dir", str(tmp_path / "r3")], capsys).err
    assert "max_images must be a positive int" in err


@pytest.mark.parametrize("content", [b"this is text, not a PNG", b""])
def test_a_corrupt_file_is_one_line_naming_it_and_no_run_folder_is_left(tmp_path, capsys, content):
    imgs = _folder(tmp_path / "imgs")
    (imgs / "broken.png").write_bytes(content)
    run = tmp_path / "run"
    res = _fail(["--data", str(imgs), "--run-dir", str(run)], capsys)
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and "broken.png" in lines[0] and "--skip-bad-images" in lines[0], res.err
    assert "usage:" not in res.err and "Traceback" not in res.err
    assert not run.exists()
    out = _train(["--data", str(imgs), "--skip-bad-images", "--run-dir", str(run)], capsys)
    assert "warning: skipped unreadable image" in out and "broken.png" in out and "8 images" in out
    assert (run / "metrics.json").is_file()


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _step_reaching(n: int, bad: int, batch: int, want_first: bool) -> int:
    """A seed whose first epoch reaches sample ``bad`` in its first batch (want_first) or a later one."""
    for seed in range(100):
        k = int((D.epoch_indices(n, seed, 0) == bad).nonzero()) // batch
        if (k == 0) == want_first:
            return seed
    raise AssertionError("no such seed")


def test_a_file_failing_to_decode_before_training_leaves_nothing(tmp_path, capsys):
    imgs = _folder(tmp_path / "imgs", n=7)
    _truncated_jpeg(imgs / "zz.jpg")  # passes the header scan; the reference pass decodes it
    run = tmp_path / "run"
    res = _fail(["--data", str(imgs), "--run-dir", str(run)], capsys)
    assert "zz.jpg" in res.err and "truncated" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1 and not run.exists()


@pytest.mark.parametrize("first_batch", [True, False])
def test_a_file_failing_to_decode_mid_run_saves_what_was_trained(tmp_path, capsys, monkeypatch, first_batch):
    monkeypatch.setattr(presets_folder, "REFERENCE_MAX", 4)  # the reference pass stops before zz.jpg
    imgs = _folder(tmp_path / "imgs", n=7)
    _truncated_jpeg(imgs / "zz.jpg")
    seed = _step_reaching(8, 7, 4, first_batch)
    run = tmp_path / "run"
    res = _fail(["--data", str(imgs), "--run-dir", str(run), "--seed", str(seed), "--steps", "4"], capsys)
    assert "zz.jpg" in res.err and "Traceback" not in res.err and "usage:" not in res.err
    if first_batch:  # nothing trained: no half-made run folder
        assert not run.exists() and "no run folder was kept" in res.err
    else:
        assert f"--resume {run}" in res.err
        m = json.loads((run / "metrics.json").read_text())
        assert m["stopped"].startswith("unreadable image at step 1") and "zz.jpg" in m["stopped"]
        assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == ["ckpt-00000001.pt"]


def test_eval_of_a_folder_run_prints_the_figure_and_its_card(tmp_path, capsys):
    imgs = _folder(tmp_path / "imgs")
    run = tmp_path / "run"
    out = _train(["--data", str(imgs), "--run-dir", str(run)], capsys)
    card_lines = [ln for ln in out.splitlines() if ln.startswith("FD-RandConv protocol:")]
    assert len(card_lines) == 2 and "16 generated vs 8 reference images" in card_lines[0]
    m = json.loads((run / "metrics.json").read_text())
    assert m["protocol"]["figure"] == "FD-RandConv" and m["protocol"]["n_reference"] == 8
    assert len(m["protocol"]["weights_sha256"]) == 64 and "FD-RandConv" in m["final"]["figures"][0]
    assert cli.main(["eval", str(run), "--n-eval", "20"]) == 0
    out = capsys.readouterr().out
    assert "FD-RandConv protocol:" in out and "20 generated vs 8 reference images" in out
    figure = float(out.split("FD-RandConv ")[-1].split(",")[0])
    assert cli.main(["eval", str(run), "--n-eval", "20"]) == 0  # deterministic: the same figure again
    assert float(capsys.readouterr().out.split("FD-RandConv ")[-1].split(",")[0]) == figure


def test_a_folder_run_saved_before_the_scan_is_rebuilt_at_its_old_shape(tmp_path, capsys):
    from ganfn import presets as P

    imgs = _folder(tmp_path / "grey")
    run = tmp_path / "run"
    _train(["--data", str(imgs), "--image-size", "8", "--channels", "3", "--run-dir", str(run)], capsys)
    cfg_file = run / "config.json"
    old = {k: v for k, v in json.loads(cfg_file.read_text()).items()
           if k not in ("channels", "max_images", "skip_bad_images")}
    assert (P.saved(old).channels, P.saved(old).image_size) == (3, 8)
    old["image_size"] = None
    assert (P.saved(old).channels, P.saved(old).image_size) == (3, 64)  # the old folder default
    old["image_size"] = 8
    cfg_file.write_text(json.dumps(old))
    assert cli.main(["eval", str(run), "--n-eval", "8"]) == 0  # a grey folder, yet the saved 3-channel model loads
    assert "FD-RandConv" in capsys.readouterr().out
    assert P.saved({"data": "digits"}).channels is None  # named data sets are untouched
