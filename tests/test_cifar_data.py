"""--data cifar10: the official python-format batches, read with a restricted unpickler.

The tests write small archives in the official format (Python 2 cPickle, protocol 2,
numpy arrays as numpy 1.x pickled them) byte by byte, so no real data set is needed."""
from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganfn import data as gdata
from ganfn.data import cifar

# ------------------------------------------------ Python 2 cPickle writer ----


def _py2_pickle(obj: object) -> bytes:
    """Protocol 2 as Python 2's cPickle wrote the CIFAR-10 batches: str as
    (SHORT_)BINSTRING, uint8 arrays through numpy.core.multiarray._reconstruct."""
    out = bytearray(b"\x80\x02")

    def string(b: bytes) -> None:
        out.extend(b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b)

    def integer(n: int) -> None:
        out.extend(b"K" + bytes([n]) if 0 <= n < 256 else b"M" + struct.pack("<H", n) if 0 <= n < 65536
                   else b"J" + struct.pack("<i", n))

    def emit(o: object) -> None:
        if isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                emit(k)
                emit(v)
            out.extend(b"u")
        elif isinstance(o, list):
            out.extend(b"](")
            for v in o:
                emit(v)
            out.extend(b"e")
        elif isinstance(o, bytes):
            string(o)
        elif isinstance(o, int):
            integer(o)
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8 and o.ndim == 2
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
            integer(0)
            out.extend(b"\x85")
            string(b"b")
            out.extend(b"\x87R(")
            integer(1)
            integer(o.shape[0])
            integer(o.shape[1])
            out.extend(b"\x86cnumpy\ndtype\n")
            string(b"u1")
            integer(0)
            integer(1)
            out.extend(b"\x87R(")
            integer(3)
            string(b"|")
            out.extend(b"NNN")
            integer(-1)
            integer(-1)
            integer(0)
            out.extend(b"tb\x89")
            string(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    emit(obj)
    return bytes(out + b".")


def _batches(rng: np.random.Generator, sizes: list[int]) -> dict[str, tuple[np.ndarray, list[int]]]:
    names = cifar.TRAIN_BATCHES + cifar.TEST_BATCHES
    return {n: (rng.integers(0, 256, (k, 3072), dtype=np.uint8), rng.integers(0, 10, k).tolist())
            for n, k in zip(names, sizes, strict=True)}


def _batch_bytes(name: str, x: np.ndarray, y: list[int]) -> bytes:
    return _py2_pickle({b"batch_label": name.encode(), b"labels": y, b"data": x,
                        b"filenames": [f"img_{i}.png".encode() for i in range(len(y))]})


def _write(root: Path, batches: dict, archive: bool, skip: str | None = None) -> Path:
    """The batches as root/cifar-10-batches-py/ or root/cifar-10-python.tar.gz; returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    if not archive:
        folder = root / cifar.FOLDER
        folder.mkdir()
        for name, (x, y) in batches.items():
            if name != skip:
                (folder / name).write_bytes(_batch_bytes(name, x, y))
        return folder
    path = root / cifar.ARCHIVE
    with tarfile.open(path, "w:gz") as tar:
        for name, (x, y) in batches.items():
            if name != skip:
                blob = _batch_bytes(name, x, y)
                info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return path


def _expected(batches: dict, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(x), torch.tensor(sum((batches[n][1] for n in names), []), dtype=torch.int64)


# ------------------------------------------------------------------ tests ----


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 4), min_size=6, max_size=6), seed=st.integers(0, 2**31 - 1),
       archive=st.booleans(), split=st.sampled_from(["train", "test", "all"]))
def test_reads_both_forms_pixel_exactly(tmp_path_factory, sizes, seed, archive, split):
    root = tmp_path_factory.mktemp("cifar")
    batches = _batches(np.random.default_rng(seed), sizes)
    _write(root, batches, archive)
    x, y = cifar.cifar10_uint8(root, split)
    ex, ey = _expected(batches, cifar.TRAIN_BATCHES * (split != "test") + cifar.TEST_BATCHES * (split != "train"))
    assert x.dtype == torch.uint8 and torch.equal(x, ex) and torch.equal(y, ey)
    # channel-major rows: the first 1,024 values of a row are the red plane, row by row
    first = batches[cifar.TEST_BATCHES[0] if split == "test" else cifar.TRAIN_BATCHES[0]][0][0]
    assert torch.equal(x[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    img, lab = gdata.load("cifar10", split=split, root=root, labels=True)  # the --data cifar10 path
    assert img.dtype == torch.float32 and torch.equal(torch.round((img + 1) * 127.5).to(torch.uint8), ex)
    assert torch.equal(lab, ey)


def test_root_may_be_the_archive_the_folder_or_env(tmp_path, monkeypatch):
    batches = _batches(np.random.default_rng(0), [1, 2, 1, 1, 1, 3])
    folder = _write(tmp_path / "a", batches, archive=False)
    archive = _write(tmp_path / "b", batches, archive=True)
    ex, ey = _expected(batches, cifar.TEST_BATCHES)
    for root in (folder, archive):
        x, y = cifar.cifar10_uint8(root, "test")
        assert torch.equal(x, ex) and torch.equal(y, ey)
    monkeypatch.setenv("GANFN_DATA_ROOT", str(tmp_path / "b"))
    assert cifar.find_cifar10() == archive and torch.equal(cifar.cifar10_uint8(split="test")[0], ex)


class _Runs:
    """A pickle payload whose unpickling calls ``_record``: what a malicious batch would do."""

    def __reduce__(self):
        return (_record, ("ran",))


_CALLS: list[str] = []


def _record(x: str) -> str:
    _CALLS.append(x)
    return x


@pytest.mark.parametrize("payload", [
    {b"data": _Runs(), b"labels": []},
    {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Runs()},
])
def test_refuses_a_callable_without_running_it(tmp_path, payload):
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=4))
    _CALLS.clear()
    with pytest.raises(ValueError, match=r"test_batch: refused to unpickle: it names .*_record"):
        cifar.cifar10_uint8(tmp_path, "test")
    assert _CALLS == []


def test_refuses_os_system(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    cmd = f"touch {marker}".encode()
    (folder / "test_batch").write_bytes(b"\x80\x02cos\nsystem\nT" + struct.pack("<i", len(cmd)) + cmd + b"\x85R.")
    with pytest.raises(ValueError, match=r"refused to unpickle: it names (os|posix)\.system"):
        cifar.cifar10_uint8(tmp_path, "test")
    assert not marker.exists()


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*cifar-10-python\.tar\.gz.*kriz/cifar"):
        cifar.cifar10_uint8(tmp_path / "empty", "train")
    batches = _batches(np.random.default_rng(1), [1] * 6)
    _write(tmp_path / "f", batches, archive=False, skip="data_batch_3")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_3 not found"):
        cifar.cifar10_uint8(tmp_path / "f", "train")
    cifar.cifar10_uint8(tmp_path / "f", "test")  # the other split is still there
    _write(tmp_path / "t", batches, archive=True, skip="test_batch")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-python\.tar\.gz holds no cifar-10-batches-py/test_batch"):
        cifar.cifar10_uint8(tmp_path / "t", "all")


@pytest.mark.parametrize("data, labels, match", [
    (np.zeros((2, 3000), np.uint8), [0, 1], r"data_batch_1: b'data' must be a uint8 array \[N, 3072\].*\[2, 3000\]"),
    (np.zeros((2, 1024), np.float32).view(np.uint8), [0, 1], r"\[2, 4096\]"),
    (np.zeros((2, 3072), np.uint8), [0], r"data_batch_1: b'labels' must hold 2 ints in 0..9.*got 1"),
    (np.zeros((1, 3072), np.uint8), [10], r"b'labels' must hold 1 ints in 0..9.*10..10"),
])
def test_wrong_shapes_are_named(tmp_path, data, labels, match):
    batches = _batches(np.random.default_rng(2), [1] * 6)
    batches["data_batch_1"] = (np.ascontiguousarray(data), labels)
    for archive in (False, True):
        _write(tmp_path / str(archive), batches, archive)
        with pytest.raises(ValueError, match=match):
            cifar.cifar10_uint8(tmp_path / str(archive), "train")


def test_a_corrupt_pickle_is_named(tmp_path):
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    (folder / "test_batch").write_bytes(_batch_bytes("test_batch", np.zeros((1, 3072), np.uint8), [0])[:40])
    with pytest.raises(ValueError, match=r"test_batch: not a readable CIFAR-10 batch pickle"):
        cifar.cifar10_uint8(tmp_path, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        cifar.cifar10_uint8(tmp_path, "val")


def test_a_broken_archive_is_named(tmp_path):
    batches = _batches(np.random.default_rng(3), [1] * 6)
    good = _write(tmp_path / "good", batches, archive=True).read_bytes()
    for i, blob in enumerate((b"not a tar archive", good[: len(good) // 2])):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / cifar.ARCHIVE).write_bytes(blob)
        with pytest.raises(ValueError, match=r"cifar-10-python\.tar\.gz: not a readable tar archive"):
            cifar.cifar10_uint8(tmp_path / str(i), "test")
