"""`ganfn sample`, `ganfn export` and `ganfn.load_generator` on single, stacked and conditional runs."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import cli_error, run_cli
from hypothesis import assume, given
from hypothesis import strategies as st
from PIL import Image

import ganfn
from ganfn import cli
from ganfn import export as E

torch.set_num_threads(1)
TINY = ["--steps", "2", "--batch-size", "8", "--n-eval", "50", "--eval-every", "2", "--log-every", "1", "--no-progress",
        "--width", "4"]


_run, _error = run_cli, cli_error  # ganfn in this process: its stdout, or its usage error


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs: on digits single (with EMA), stacked (2 seeds) and conditional; on ring8 (2-D points)."""
    root = tmp_path_factory.mktemp("runs")
    argvs = {"single": [], "stacked": ["--seeds", "2"], "cond": ["--conditional"],
             "points": ["--data", "ring8", "--model", "mlp", "--hidden", "8", "--depth", "1"]}
    for name, extra in argvs.items():
        assert cli.main(["train", "--run-dir", str(root / name), *TINY, *extra]) == 0
    return root


def _reference(run_dir, member, z, y=None):
    loaded = E.load_run(run_dir)
    state = E.member(loaded, member)
    with torch.no_grad():
        return loaded.gan.sample(state, z, y, standing=loaded.cfg.standing_stats)


def _latents(run_dir, n, seed=0):
    return E.load_run(run_dir).gan.draw_latents(torch.Generator().manual_seed(seed), n)


@pytest.mark.parametrize("name,member,klass", [("single", None, None), ("stacked", 1, None), ("cond", None, 3),
                                               ("cond", None, None)])
def test_sample_writes_the_pixels_of_gan_sample(runs, tmp_path, capsys, name, member, klass):
    n, out = 5, tmp_path / "png"
    argv = ["sample", str(runs / name), "--n", str(n), "--out", str(out), "--seed", "7"]
    argv += ["--member", str(member)] if member is not None else []
    argv += ["--class", str(klass)] if klass is not None else []
    _run(argv, capsys)
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(n)]
    z = _latents(runs / name, n, seed=7)
    y = None if name != "cond" else (torch.full((n,), klass) if klass is not None else torch.arange(n) % 10)
    want = E.to_uint8(_reference(runs / name, member, z, y)).numpy()
    got = np.stack([np.asarray(Image.open(f)) for f in files])
    assert got.shape[1:3] == want.shape[1:3] == (8, 8)  # the run's image size
    assert np.array_equal(got, want[..., 0])  # 1-channel digits: grey PNGs


def test_truncation_scales_the_latents_toward_zero(runs, tmp_path, capsys):
    out = tmp_path / "trunc"
    _run(["sample", str(runs / "single"), "--n", "3", "--out", str(out), "--truncation", "0.5"], capsys)
    z = _latents(runs / "single", 3) * 0.5
    want = E.to_uint8(_reference(runs / "single", None, z)).numpy()[..., 0]
    assert np.array_equal(np.stack([np.asarray(Image.open(out / f"{i:06d}.png")) for i in range(3)]), want)


def test_interpolate_writes_one_grid_of_slerped_latents(runs, tmp_path, capsys):
    out = tmp_path / "interp"
    _run(["sample", str(runs / "single"), "--n", "2", "--steps", "4", "--out", str(out), "--interpolate"], capsys)
    assert [p.name for p in out.iterdir()] == ["interpolation.png"]
    img = np.asarray(Image.open(out / "interpolation.png"))
    scale = 64 // 8
    assert img.shape[:2] == (2 * 10 * scale, 4 * 10 * scale)  # 2 rows x 4 columns of 8 px images, 1 px frames


@pytest.mark.parametrize("name,member,klass", [("single", None, None), ("stacked", 0, None), ("stacked", 1, None),
                                               ("cond", None, 4), ("points", None, None)])
def test_exported_generator_equals_gan_sample(runs, tmp_path, capsys, name, member, klass):
    f = tmp_path / "g.pt"
    _run(["export", str(runs / name), "--out", str(f), *(["--member", str(member)] if member is not None else [])],
         capsys)
    g = ganfn.load_generator(f)
    assert isinstance(g, torch.nn.Module) and not g.training
    z = _latents(runs / name, 6, seed=3)
    y = torch.full((6,), klass) if klass is not None else None
    with torch.no_grad():
        got = g(z) if y is None else g(z, y)
    assert torch.equal(got, _reference(runs / name, member, z, y))
    if name == "single":  # the EMA generator, not the live one
        loaded = E.load_run(runs / name)
        with torch.no_grad():
            assert not torch.equal(got, loaded.gan.sample(loaded.state, z, ema=False))
    assert g.latent_shape == tuple(z.shape[1:]) and g.sample_shape == ((2,) if name == "points" else (1, 8, 8))
    assert g.num_classes == (10 if name == "cond" else None)


def test_the_members_of_a_stacked_run_export_differently(runs, tmp_path, capsys):
    for i in (0, 1):
        _run(["export", str(runs / "stacked"), "--out", str(tmp_path / f"g{i}.pt"), "--member", str(i)], capsys)
    z = _latents(runs / "stacked", 4)
    with torch.no_grad():
        assert not torch.equal(ganfn.load_generator(tmp_path / "g0.pt")(z), ganfn.load_generator(tmp_path / "g1.pt")(z))


RAN: list[str] = []


def _evil():  # what a malicious file would run on unpickling
    RAN.append("code from the file ran")


def test_a_file_holding_a_pickled_callable_is_refused(runs, tmp_path, capsys):
    f = tmp_path / "g.pt"
    _run(["export", str(runs / "single"), "--out", str(f)], capsys)
    obj = torch.load(f, weights_only=True)
    obj["hook"] = _evil  # a pickled function: unpickling it imports and could run code
    torch.save(obj, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="pickled function or class.*run code"):
        ganfn.load_generator(tmp_path / "evil.pt")

    class Reducer:
        def __reduce__(self):
            return (_evil, ())

    with (tmp_path / "raw.pt").open("wb") as fh:
        pickle.dump(Reducer(), fh, protocol=2)
    with pytest.raises(ValueError, match="pickled function or class"):
        ganfn.load_generator(tmp_path / "raw.pt")
    assert not RAN


def test_load_generator_refuses_wrong_damaged_and_unknown_files(runs, tmp_path, capsys):
    f = tmp_path / "g.pt"
    _run(["export", str(runs / "single"), "--out", str(f)], capsys)
    obj = torch.load(f, weights_only=True)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an exported ganfn generator"):
        ganfn.load_generator(tmp_path / "other.pt")
    torch.save({**obj, "version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99"):
        ganfn.load_generator(tmp_path / "v99.pt")
    bad = {**obj, "state_dict": {k: v + 1 if v.is_floating_point() else v for k, v in obj["state_dict"].items()}}
    torch.save(bad, tmp_path / "flipped.pt")
    with pytest.raises(ValueError, match="damaged"):
        ganfn.load_generator(tmp_path / "flipped.pt")
    with pytest.raises(ValueError, match="unknown generator builder"):
        E.save_generator(tmp_path / "x.pt", obj["state_dict"], builder="os.system", kwargs={}, latent_shape=(1,),
                         sample_shape=(1,), num_classes=None)
    with pytest.raises(FileNotFoundError):
        ganfn.load_generator(tmp_path / "missing.pt")


def test_bad_sample_and_export_arguments_are_named(runs, tmp_path, capsys):
    stacked, single, cond = (str(runs / k) for k in ("stacked", "single", "cond"))
    out = str(tmp_path / "o")
    assert "--member" in _error(["sample", stacked, "--n", "2", "--out", out], capsys)
    assert "out of range" in _error(["sample", stacked, "--n", "2", "--out", out, "--member", "2"], capsys)
    assert "single run" in _error(["export", single, "--out", out, "--member", "1"], capsys)
    assert "conditional" in _error(["sample", single, "--n", "2", "--out", out, "--class", "1"], capsys)
    assert "classes 0 to 9" in _error(["sample", cond, "--n", "2", "--out", out, "--class", "10"], capsys)
    assert "--truncation" in _error(["sample", single, "--n", "2", "--out", out, "--truncation", "-1"], capsys)
    assert "--n must be" in _error(["sample", single, "--n", "0", "--out", out], capsys)
    assert "writes PNG images" in _error(["sample", str(runs / "points"), "--n", "2", "--out", out], capsys)
    assert "config.json" in _error(["sample", str(tmp_path), "--n", "2", "--out", out], capsys)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.png").write_bytes(b"x")
    assert "not an empty folder" in _error(["sample", single, "--n", "2", "--out", str(tmp_path / "full")], capsys)
    assert (tmp_path / "full" / "keep.png").read_bytes() == b"x"
    assert "exists" in _error(["export", single, "--out", str(tmp_path / "full" / "keep.png")], capsys)
    assert not (tmp_path / "o").exists()


@given(st.integers(1, 4), st.integers(2, 6), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_slerp_ends_at_its_latents_and_keeps_equal_norms(n, d, steps, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g)
    b = torch.randn(n, d, generator=g)
    # opposite latents have no unique great circle: slerp's one undefined case
    assume(bool((torch.nn.functional.cosine_similarity(a, b) > -0.999).all()))
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms: slerp stays on the sphere
    out = E.slerp(a, b, torch.linspace(0, 1, steps))
    assert out.shape == (n, steps, d)
    torch.testing.assert_close(out[:, 0], a)
    torch.testing.assert_close(out[:, -1], b)
    torch.testing.assert_close(out.norm(dim=-1), a.norm(dim=1, keepdim=True).expand(n, steps), rtol=1e-4, atol=1e-5)
    same = E.slerp(a, a, torch.linspace(0, 1, steps))  # parallel latents: no division by sin(0)
    torch.testing.assert_close(same, a[:, None].expand(n, steps, d))


@given(st.floats(0, 3), st.integers(0, 2**31 - 1))
def test_truncate_moves_latents_toward_the_mean(psi, seed):
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(E.truncate(z, psi), psi * z)
    m = torch.ones(3)
    torch.testing.assert_close(E.truncate(z, psi, m) - m, psi * (z - m))
    for bad in (-0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="psi"):
            E.truncate(z, bad)


@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_to_uint8_maps_the_sample_range_onto_bytes(n, c, s, seed):
    x = torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed)) * 3 - 1.5
    u = E.to_uint8(x)
    assert u.shape == (n, s, s, c) and u.dtype == torch.uint8
    assert torch.equal(u, ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1))
    assert E.to_uint8(torch.full((1, 1, 1, 1), -1.0)).item() == 0 and E.to_uint8(torch.ones(1, 1, 1, 1)).item() == 255


def test_pytorch_fid_reads_the_sample_folder(runs, tmp_path, capsys):
    fid_score = pytest.importorskip("pytorch_fid.fid_score", reason="pytorch-fid is not installed")
    import torchvision.transforms as T

    out = tmp_path / "fid"
    _run(["sample", str(runs / "single"), "--n", "4", "--out", str(out), "--batch-size", "3"], capsys)
    ds = fid_score.ImagePathDataset(sorted(out.glob("*.png")), transforms=T.ToTensor())
    x = torch.stack([ds[i] for i in range(len(ds))])
    assert x.shape == (4, 3, 8, 8)  # grey PNGs come back as the RGB images FID's Inception takes
    want = E.to_uint8(_reference(runs / "single", None, _latents(runs / "single", 4))).float() / 255
    torch.testing.assert_close(x, want.permute(0, 3, 1, 2).expand(4, 3, 8, 8))
