"""The header scan of an image folder (ganfn.data.scan_images) and the one-line BadImageError of the sources."""
import io
import statistics
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ganfn import data as D

GREY, COLOUR = ("L", "LA", "I;16", "1"), ("RGB", "RGBA", "P", "CMYK")


def _save(path: Path, mode: str, w: int, h: int, seed: int = 0, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    im.save(path, format=fmt)
    return path


def _truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half: its header is intact (it passes the scan), its pixels do not decode."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    raw = buf.getvalue()
    path.write_bytes(raw[: len(raw) // 2])
    return path


@given(st.lists(st.tuples(st.sampled_from(GREY + COLOUR), st.integers(3, 20), st.integers(3, 20)),
                min_size=1, max_size=5))
def test_scan_reads_modes_and_sizes_from_headers(specs):
    with tempfile.TemporaryDirectory() as tmp:
        for i, (mode, w, h) in enumerate(specs):
            _save(Path(tmp) / f"{i:02d}.{'jpg' if mode == 'CMYK' else 'png'}", mode, w, h, i)
        scan = D.scan_images(tmp)
    assert len(scan.names) == len(specs) and scan.skipped == []
    all_grey = all(m in GREY for m, _, _ in specs)
    assert scan.channels == (1 if all_grey else 3)
    assert scan.sides == [min(w, h) for _, w, h in specs]
    assert scan.side == statistics.median_low(min(w, h) for _, w, h in specs)


def test_a_text_file_named_png_is_named_in_one_line_or_skipped(tmp_path):
    for i in range(3):
        _save(tmp_path / f"ok{i}.png", "L", 8, 8, i)
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(D.BadImageError) as e:
        D.scan_images(tmp_path)
    msg = str(e.value)
    assert "notes.png" in msg and "--skip-bad-images" in msg and "\n" not in msg
    scan = D.scan_images(tmp_path, skip_bad=True)
    assert [Path(n).name for n in scan.names] == ["ok0.png", "ok1.png", "ok2.png"]
    assert [Path(n).name for n, _ in scan.skipped] == ["notes.png"]
    src = D.images_source(tmp_path, 8, workers=0, exclude=scan.excluded)
    assert len(src) == 3


def test_a_truncated_png_fails_the_header_scan(tmp_path):
    raw = (_save(tmp_path / "a.png", "RGB", 32, 32)).read_bytes()
    (tmp_path / "a.png").write_bytes(raw[: len(raw) - 30])  # loses the last data chunk's tail and IEND
    with pytest.raises(D.BadImageError, match="a.png"):
        D.scan_images(tmp_path)


def test_max_images_counts_readable_files_and_rejects_bad_values(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    for i in range(4):
        _save(tmp_path / f"b{i}.png", "L", 8, 8, i)
    scan = D.scan_images(tmp_path, max_images=2, skip_bad=True)
    assert [Path(n).name for n in scan.names] == ["b0.png", "b1.png"]
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_images must be a positive int"):
            D.scan_images(tmp_path, max_images=bad)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_text("no")
    with pytest.raises(ValueError, match="no readable image"):
        D.scan_images(only_bad, skip_bad=True)


def test_zip_archives_are_scanned_and_skipped_files_excluded(tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(buf, "PNG")
            f.writestr(f"d/{i}.png", buf.getvalue())
        f.writestr("d/bad.png", b"garbage")
    with pytest.raises(D.BadImageError, match=r"imgs\.zip:d/bad\.png"):
        D.scan_images(z)
    scan = D.scan_images(z, skip_bad=True)
    assert scan.excluded == ["d/bad.png"] and scan.channels == 1
    assert len(D.images_source(z, 8, workers=0, exclude=scan.excluded, channels=1)) == 3


@pytest.mark.parametrize("stream,workers", [(True, 0), (True, 1), (False, 1)])
def test_a_file_that_fails_to_decode_is_named_without_a_worker_traceback(tmp_path, stream, workers):
    for i in range(5):
        _save(tmp_path / f"a{i}.png", "RGB", 8, 8, i)
    _truncated_jpeg(tmp_path / "z.jpg")
    scan = D.scan_images(tmp_path)  # passes: JPEG has no checksums to verify
    assert len(scan.names) == 6
    with pytest.raises(D.BadImageError) as e:
        src = D.images_source(tmp_path, 8, stream=stream, workers=workers)
        D.next_batch(src, D.loader_init(len(src), 0), 6)
    assert e.value.name.endswith("z.jpg") and "truncated" in e.value.reason
    assert "Traceback" not in str(e.value) and "\n" not in str(e.value)


def test_bad_image_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(D.BadImageError("x.png", "broken")))
    assert (e.name, e.reason) == ("x.png", "broken") and str(e).startswith("cannot read image x.png: broken")


def test_streaming_after_an_error_restarts_cleanly(tmp_path):
    for i in range(4):
        _save(tmp_path / f"a{i}.png", "L", 8, 8, i)
    bad = _truncated_jpeg(tmp_path / "z.jpg")
    src = D.images_source(tmp_path, 8, workers=0, channels=1)
    pos = D.loader_init(len(src), 0)
    with pytest.raises(D.BadImageError):
        D.next_batch(src, pos, 5)
    _save(bad, "L", 8, 8, 9, fmt="JPEG")  # the user replaces the file: the same position now loads
    x, _ = D.next_batch(src, pos, 5)
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
