"""Checkpoints: round trip, code-free loading, atomic writes, pruning, RNG state."""
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import checkpoint as ckpt
from ganfn import models
from ganfn.tree import leaves

torch.set_num_threads(1)


def _gan(**kw):
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, **kw)


def _assert_same(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y)


def test_round_trip_keeps_every_leaf(tmp_path):
    gan = _gan(parts=ganfn.recipes.classic(penalties=[ganfn.penalties.gradient_penalty()], spectral_norm=True,
                                           replay_size=4, ema_decay=0.99))
    state = gan.init(3, lr_d=1e-3, gp_weight=5.0)
    rng = torch.Generator().manual_seed(0)
    state, _ = gan.train_step(state, torch.randn(8, 2), gan.draw_noise(rng, 8))
    pos = {"n": None, "seed": 1, "epoch": 0, "index": 7, "rank": 0, "world_size": 1}
    path = ckpt.save(tmp_path / "a.pt", state, step=1, position=pos, rngs=[rng], extra={"history": [{"x": 1.5}]})
    # A plain weights_only load works: the file holds no code.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "ganfn-checkpoint"
    c = ckpt.load(path)
    assert isinstance(c["state"], ganfn.TrainState)
    _assert_same(c["state"], state)
    assert c["position"] == pos and c["step"] == 1 and c["extra"] == {"history": [{"x": 1.5}]}
    fresh = torch.Generator()
    ckpt.set_rng_states([fresh], c["rngs"])
    assert torch.equal(torch.rand(5, generator=fresh), torch.rand(5, generator=rng))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ganfn-checkpoint", "version": 1, "evil": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable ganfn checkpoint"):
        ckpt.load(path)


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckpt.load(tmp_path / "nope.pt")
    torch.save({"a": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ganfn checkpoint"):
        ckpt.load(tmp_path / "other.pt")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch, exc):
    gan = _gan()
    s0 = gan.init(0)
    mgr = ckpt.CheckpointManager(tmp_path, keep=1)
    first = mgr.save(s0, step=1)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        # Write part of the bytes, then die, like a kill mid-write.
        real_save({"partial": torch.zeros(1000)}, f)
        f.flush()
        raise exc("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(exc):
        mgr.save(gan.init(1), step=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert mgr.list() == [first]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary file left
    _assert_same(ckpt.load(first)["state"], s0)


@settings(max_examples=8, deadline=None)
@given(keep=st.integers(1, 4), n=st.integers(1, 7))
def test_manager_keeps_newest(tmp_path_factory, keep, n):
    d = tmp_path_factory.mktemp("ck")
    gan = _gan()
    s = gan.init(0)
    mgr = ckpt.CheckpointManager(d, keep=keep)
    for step in range(1, n + 1):
        mgr.save(s, step=step * 10)
    steps = [int(p.stem.split("-")[1]) for p in mgr.list()]
    assert steps == [10 * k for k in range(max(1, n - keep + 1), n + 1)]
    assert mgr.latest() == mgr.path(n * 10)


def test_state_dict_rejects_wrong_input():
    with pytest.raises(TypeError):
        ckpt.state_to_dict({"step": torch.zeros(())})
    with pytest.raises(ValueError, match="lacks fields"):
        ckpt.state_from_dict({"step": torch.zeros(())})


def _flip_bit_in_tensor_data(path, tensor):
    """Flip one bit inside ``tensor``'s bytes as stored in the file (torch.load still reads it)."""
    raw = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().view(torch.uint8).numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    raw[at + len(needle) // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def test_checksum_catches_a_flipped_bit(tmp_path):
    gan = _gan()
    state = gan.init(0)
    path = ckpt.save(tmp_path / "a.pt", state, step=1)
    torch.load(path, weights_only=True)  # a clean file loads
    w = next(iter(state.d.params.values()))
    _flip_bit_in_tensor_data(path, w)
    raw = torch.load(path, weights_only=True)  # torch itself does not notice...
    assert not torch.equal(raw["state"]["d"]["params"][next(iter(state.d.params))], w)
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"a.pt is damaged.*SHA-256"):  # ...ganfn does
        ckpt.load(path)


def test_damaged_newest_is_skipped_for_newest_good_with_a_warning(tmp_path):
    gan = _gan()
    mgr = ckpt.CheckpointManager(tmp_path, keep=3)
    s1, s2 = gan.init(1), gan.init(2)
    good = mgr.save(s1, step=10)
    bad = mgr.save(s2, step=20)
    _flip_bit_in_tensor_data(bad, next(iter(s2.g.params.values())))
    with pytest.warns(RuntimeWarning) as rec:
        path, c = mgr.load_latest()
    msg = str(rec[0].message)
    assert path == good and c["step"] == 10 and str(bad) in msg and str(good) in msg
    _assert_same(c["state"], s1)
    # Every checkpoint damaged: the newest one's error, not a silent fresh start.
    _flip_bit_in_tensor_data(good, next(iter(s1.g.params.values())))
    with pytest.raises(ckpt.CorruptCheckpointError, match="ckpt-00000020"):
        mgr.load_latest()
    assert ckpt.CheckpointManager(tmp_path / "none").load_latest() is None


def test_older_format_version_names_both_versions(tmp_path):
    path = tmp_path / "old.pt"
    old = ckpt.VERSION - 1
    torch.save({"format": "ganfn-checkpoint", "version": old, "step": 3, "state": {}}, path)
    with pytest.raises(ValueError, match=rf"format version {old}, but this ganfn reads format version {ckpt.VERSION}"):
        ckpt.load(path)
    mgr = ckpt.CheckpointManager(tmp_path)
    import shutil
    shutil.copy(path, mgr.path(3))
    with pytest.raises(ValueError, match=f"format version {old}"):  # never skipped silently for an older file
        mgr.load_latest()


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4), st.text(max_size=5))
def test_digest_sees_every_value(values, text):
    obj = {"t": torch.tensor(values, dtype=torch.float64), "v": values, "s": text}
    d = ckpt.digest(obj)
    assert d == ckpt.digest({"t": torch.tensor(values, dtype=torch.float64), "v": list(values), "s": text})
    assert d != ckpt.digest({**obj, "s": text + "x"})
    assert d != ckpt.digest({**obj, "t": torch.tensor(values + [0.0], dtype=torch.float64)})
    assert d != ckpt.digest({**obj, "t": obj["t"].float()})
