"""Image folders and zip archives larger than memory: streaming vs preloaded, flips, resume."""
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import ganfn
from ganfn import data, models
from ganfn.data import batch_indices, flip_bits, images_source, loader_init, next_batch
from ganfn.loop import fit
from ganfn.tree import leaves

torch.set_num_threads(1)
QUIET = dict(progress=False, print_fn=lambda s: None)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """23 PNGs of assorted sizes (non-square: the centre crop matters) in two sub-folders, and a zip of them."""
    root = tmp_path_factory.mktemp("imgs") / "folder"
    rng = np.random.default_rng(0)
    for i in range(23):
        h, w = rng.integers(9, 20, size=2)
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(sub / f"{i:02d}.png")
    (root / "notes.txt").write_text("not an image")
    zpath = root.parent / "images.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(root.rglob("*.png")):
            z.write(p, p.relative_to(root))
    return root, zpath


def _walk(source, seed, steps, batch_size, leading=None):
    pos = loader_init(len(source) if not isinstance(source, torch.Tensor) else source.shape[0], seed)
    out = []
    for _ in range(steps):
        b, pos = next_batch(source, pos, batch_size, leading=leading)
        out.append(b)
    return torch.stack(out), pos


def test_streaming_and_preloaded_yield_the_same_batches(folder):
    root, zpath = folder
    pre = images_source(root, 8, stream=False, flip=True)
    assert pre.images.dtype == torch.uint8 and pre.shape == (23, 3, 8, 8)
    # 6 batches of 2 x 5 cross two epoch boundaries (23 samples).
    want, want_pos = _walk(pre, 7, 6, 5, leading=2)
    for src in (images_source(root, 8, flip=True, workers=0), images_source(root, 8, flip=True, workers=2),
                images_source(zpath, 8, flip=True, workers=2), images_source(zpath, 8, stream=False, flip=True)):
        got, pos = _walk(src, 7, 6, 5, leading=2)
        assert torch.equal(got, want) and pos == want_pos
    assert want.dtype == torch.float32 and want.min() >= -1 and want.max() <= 1
    # ...and another seed gives other batches (the comparison can fail).
    other, _ = _walk(pre, 8, 6, 5, leading=2)
    assert not torch.equal(other, want)


def test_flips_come_from_the_position_seed(folder):
    root, _ = folder
    plain = images_source(root, 8, stream=False, flip=False)
    flipped = images_source(root, 8, stream=False, flip=True)
    pos = loader_init(23, 3)
    a, _ = plain.batch_at(pos, 23)
    b, _ = flipped.batch_at(pos, 23)
    idx, flips, _ = batch_indices(pos, 23, flips=True)
    assert torch.equal(flips, flip_bits(23, 3, 0)[idx])
    assert 0 < int(flips.sum()) < 23
    assert torch.equal(b[flips], a[flips].flip(-1)) and torch.equal(b[~flips], a[~flips])
    assert not torch.equal(flip_bits(23, 3, 0), flip_bits(23, 3, 1))  # new decisions every epoch


def test_image_folder_float_equals_preloaded_uint8(folder):
    root, zpath = folder
    x = data.image_folder(root, 8)
    u8 = images_source(zpath, 8, stream=False).images
    assert torch.equal(x, data.to_unit_range(u8))
    # Centre crop: a 10 x 30 image keeps its middle square.
    img = np.zeros((10, 30, 3), dtype=np.uint8)
    img[:, 10:20] = 255
    one = root.parent / "one"
    one.mkdir()
    Image.fromarray(img).save(one / "x.png")
    assert torch.equal(data.ImageFiles(one, 10)[0], torch.full((3, 10, 10), 255, dtype=torch.uint8))
    assert torch.equal(data.ImageFiles(one, 10)[(0, True)], data.ImageFiles(one, 10)[0].flip(-1))


@settings(max_examples=15)
@given(st.integers(1, 40), st.integers(1, 17), st.integers(0, 5), st.integers(1, 60))
def test_in_memory_source_equals_tensor_batching(n, batch, seed, skip):
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, 256, (n, 1, 2, 2), generator=g, dtype=torch.uint8)
    before = u8.clone()
    src = data.InMemoryImages(u8)
    pos = {**loader_init(n, seed), "epoch": skip // n, "index": skip % n}
    frozen = dict(pos)
    got, new = next_batch(src, pos, batch)
    want, want_new = next_batch(data.to_unit_range(u8), pos, batch)
    assert torch.equal(got, want) and new == want_new
    assert pos == frozen and torch.equal(u8, before)  # pure: inputs untouched


def test_streaming_restarts_at_any_position(folder):
    root, _ = folder
    src = images_source(root, 8, flip=True, workers=2)
    pre = images_source(root, 8, stream=False, flip=True)
    pos = loader_init(23, 1)
    _, p1 = src.batch_at(pos, 4)
    _, p2 = src.batch_at(p1, 4)
    # Going back (a resume from an older checkpoint) gives the old batch again.
    again, q1 = src.batch_at(pos, 4)
    want, _ = pre.batch_at(pos, 4)
    assert torch.equal(again, want) and q1 == p1
    src.close()


def test_resume_mid_epoch_with_workers_is_bit_identical(folder, tmp_path):
    root, _ = folder
    G, D, latent = models.build("mlp", (3, 8, 8), hidden=16, depth=1, latent_dim=8)
    gan = ganfn.GAN(G, D, latent_dim=latent)
    kw = dict(steps=6, batch_size=4, log_every=1, checkpoint_every=None, seed=2, **QUIET)
    full, h_full = fit(gan, images_source(root, 8, flip=True, workers=2), run_dir=tmp_path / "full", **kw)
    fit(gan, images_source(root, 8, flip=True, workers=2), run_dir=tmp_path / "half", **{**kw, "steps": 3})
    # 3 steps x 4 = 12 of 23 samples: the checkpoint is in the middle of epoch 0.
    c = ganfn.checkpoint.load(ganfn.checkpoint.CheckpointManager(tmp_path / "half" / "checkpoints").latest())
    assert c["position"]["epoch"] == 0 and c["position"]["index"] == 12
    resumed, h_res = fit(gan, images_source(root, 8, flip=True, workers=2), run_dir=tmp_path / "half", resume=True,
                         **kw)
    assert all(torch.equal(a, b) for a, b in zip(leaves(full), leaves(resumed), strict=True))
    assert [r["d_loss"] for r in h_full["train"]] == [r["d_loss"] for r in h_res["train"]]
    # A run on unflipped data differs (the comparison can fail).
    other, _ = fit(gan, images_source(root, 8, workers=0), run_dir=tmp_path / "other", **kw)
    assert not all(torch.equal(a, b) for a, b in zip(leaves(full), leaves(other), strict=True))


def test_bad_sources_raise_clear_errors(folder, tmp_path):
    root, _ = folder
    with pytest.raises(FileNotFoundError, match="not found"):
        images_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        images_source(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="nor a zip archive"):
        images_source(tmp_path / "f.txt")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        images_source(root, channels=2)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*x.png"):
        images_source(bad, stream=False)
    src = images_source(root, 8, workers=0)
    with pytest.raises(ValueError, match="position is for n=5 samples but the image source has 23"):
        next_batch(src, loader_init(5, 0), 2)
    with pytest.raises(ValueError, match="uint8"):
        data.InMemoryImages(torch.zeros(2, 1, 2, 2))
