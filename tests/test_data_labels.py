"""Labelled data for conditional GANs: every source's labels, and batching of
(images, labels) pairs (aligned, pure, resumable)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_data import make_fashion, write_idx, write_images

import ganfn.data as D

torch.set_num_threads(1)

FEW = settings(max_examples=10, deadline=None)


@pytest.mark.parametrize("fn, centers, std",
                         [(D.ring8, D.ring8_centers(), D.RING8_STD), (D.grid25, D.grid25_centers(), D.GRID25_STD)])
@given(n=st.integers(0, 300), seed=st.integers(0, 2**31))
@FEW
def test_mixture_label_is_the_mode_index(fn, centers, std, n, seed):
    x, y = fn(n, torch.Generator().manual_seed(seed), labels=True)
    assert y.dtype == torch.int64 and y.shape == (n,)
    # same samples as the unlabelled call, each within 6 std of its own mode
    assert torch.equal(x, fn(n, torch.Generator().manual_seed(seed)))
    if n:
        assert (x - centers[y]).norm(dim=1).max() < 6 * std
        assert torch.equal(torch.cdist(x, centers).argmin(1), y)


def test_labelled_samplers_and_load():
    x, y = D.LABELLED_SAMPLERS["ring8"](64, torch.Generator().manual_seed(0))
    assert x.shape == (64, 2) and int(y.max()) < D.NUM_CLASSES["ring8"]
    x, y = D.load("grid25", n=30, seed=1, labels=True)
    assert x.shape == (30, 2) and int(y.max()) < 25
    x, y = D.load("digits", labels=True)
    assert x.shape == (1400, 1, 8, 8) and y.shape == (1400,) and set(y.tolist()) == set(range(10))
    x16, y16 = D.load("digits", size=16, labels=True)
    assert x16.shape == (1400, 1, 16, 16) and torch.equal(y, y16)


def test_load_labels_from_files(tmp_path):
    make_fashion(tmp_path / "fm")
    x, y = D.load("fashion_mnist", root=tmp_path / "fm", size=8, labels=True)
    assert x.shape == (6, 1, 8, 8) and y.tolist() == [0, 1, 2, 3, 4, 5]
    raw = tmp_path / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in [("train", 5), ("t10k", 3)]:
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 255, np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8)[::-1].copy())
    x, y = D.load("mnist", root=tmp_path / "tv", labels=True)
    assert x.shape == (5, 1, 28, 28) and y.tolist() == [4, 3, 2, 1, 0]
    rows = np.zeros((2, 785), dtype=np.int64)
    rows[:, 784] = [3, 9]
    with gzip.open(tmp_path / "m.csv.gz", "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    x, y = D.load("mnist5k", root=tmp_path / "m.csv.gz", size=8, labels=True)
    assert x.shape == (2, 1, 8, 8) and y.tolist() == [3, 9]


def test_image_folder_labels_are_sorted_subfolders(tmp_path):
    write_images(tmp_path / "dogs")
    x, y = D.image_folder(tmp_path / "dogs", 8, labels=True)
    # a.jpg in Chihuahua (class 0); b.PNG and c.png in Japanese_spaniel (class 1)
    assert x.shape == (3, 3, 8, 8) and y.tolist() == [0, 1, 1]
    assert torch.equal(x, D.image_folder(tmp_path / "dogs", 8))
    x, y = D.load(str(tmp_path / "dogs"), size=8, labels=True)
    assert y.tolist() == [0, 1, 1]
    files = sorted(p for p in (tmp_path / "dogs").rglob("*.*g"))
    assert D.folder_labels(tmp_path / "dogs", files)[1] == ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]


def test_image_folder_labels_need_class_subfolders(tmp_path):
    from PIL import Image

    write_images(tmp_path / "loose")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "loose" / "stray.png")
    with pytest.raises(ValueError, match="stray.png.*folder named after its class"):
        D.image_folder(tmp_path / "loose", 8, labels=True)
    assert D.image_folder(tmp_path / "loose", 8).shape[0] == 4  # unlabelled use is unaffected
    (tmp_path / "one" / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "one" / "cats" / "a.png")
    with pytest.raises(ValueError, match="at least 2 classes"):
        D.image_folder(tmp_path / "one", 8, labels=True)


@given(n=st.integers(2, 40), bs=st.integers(1, 9), seed=st.integers(0, 99), leading=st.sampled_from([None, 1, 3]))
@FEW
def test_labelled_batches_stay_aligned_and_match_unlabelled(n, bs, seed, leading):
    x = torch.arange(n, dtype=torch.float32)[:, None].expand(n, 3).contiguous()
    y = torch.arange(n) * 7
    pos = D.loader_init(n, seed)
    pos_u = dict(pos)
    for _ in range(3):
        (bx, by), pos = D.next_batch((x, y), pos, bs, leading=leading)
        ux, pos_u = D.next_batch(x, pos_u, bs, leading=leading)
        lead = () if leading is None else (leading,)
        assert bx.shape == (*lead, bs, 3) and by.shape == (*lead, bs)
        assert torch.equal(bx, ux) and pos == pos_u  # the labels do not change the order
        assert torch.equal(by, bx[..., 0].long() * 7)  # each label stays with its sample


def test_labelled_batching_is_pure_and_checks_lengths():
    x, y = torch.randn(10, 2), torch.arange(10)
    x0, y0 = x.clone(), y.clone()
    pos = D.loader_init(10, 0)
    a, pa = D.next_batch((x, y), pos, 4)
    b, pb = D.next_batch((x, y), pos, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and pa == pb and pos == D.loader_init(10, 0)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    with pytest.raises(ValueError, match="equal lengths"):
        D.next_batch((x, y[:9]), pos, 4)
    (sx, sy), _ = D.next_batch(D.ring8_labelled, D.loader_init(None, 3), 5, leading=2)
    assert sx.shape == (2, 5, 2) and sy.shape == (2, 5)
