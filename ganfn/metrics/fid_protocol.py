"""FID as papers compute it: Inception statistics, ``.npz`` reference files, sample counts.

pytorch-fid (Seitzer; the TensorFlow FID of Heusel et al. 2017 ported to
PyTorch) is what most papers report. With its weights file
(``pt_inception-2015-12-05-6726825d.pth``, see :mod:`ganfn.metrics.inception`)
ganfn follows its protocol step for step: uint8 images (floats are quantised
as when saved to PNG), the same resize and normalisation, pool3 features, then
float64 statistics ``mu = mean``, ``sigma = cov`` (N - 1 normalisation, like
``numpy.cov``) and the Fréchet distance between the two Gaussians.

Reference statistics are cached in pytorch-fid's ``.npz`` format (arrays
``mu`` [2048] and ``sigma`` [2048, 2048], float64), so a file written here is
read by ``pytorch_fid.fid_score`` and one written by pytorch-fid
(``python -m pytorch_fid --save-stats``) is read here. ganfn adds an ``n``
array (the number of images behind the statistics), which pytorch-fid ignores.

FID is biased upwards at small sample counts, so every figure here carries
its ``n`` (and ``n_ref``); compare FIDs only at equal n (papers use 50,000).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .extractor import Extractor
from .frechet import check_features, feature_stats, frechet_distance_from_stats

__all__ = ["FIDStats", "fid_stats", "save_stats", "load_stats", "fid", "reference_stats"]


class FIDStats(NamedTuple):
    mu: Tensor  # [d] float64
    sigma: Tensor  # [d, d] float64
    n: int | None  # images behind the statistics (None: unknown, e.g. a pytorch-fid file)


def fid_stats(images: Tensor | Iterable[Tensor], extractor: Extractor) -> FIDStats:
    """Statistics of ``extractor``'s features over ``images``.

    ``images``: one tensor [N, C, H, W] or an iterable of such batches (uint8,
    or floats in [-1, 1]): a folder larger than memory streams through one
    batch at a time; only the [N, d] features are kept. N >= 2.
    """
    batches = [images] if isinstance(images, Tensor) else images
    feats = [extractor(b).features for b in batches]
    if not feats:
        raise ValueError("fid_stats got no images (an empty iterable of batches)")
    x = check_features(torch.cat(feats), "features")
    mu, sigma = feature_stats(x)
    return FIDStats(mu, sigma, int(x.shape[0]))


def save_stats(path: str | os.PathLike, stats: FIDStats) -> Path:
    """Write ``stats`` to ``path`` in pytorch-fid's ``.npz`` format (plus ``n``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"FID statistics files end in .npz (pytorch-fid's format), got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"mu": stats.mu.double().cpu().numpy(), "sigma": stats.sigma.double().cpu().numpy()}
    if stats.n is not None:
        arrays["n"] = np.asarray(stats.n, dtype=np.int64)
    np.savez_compressed(path, **arrays)
    return path


def load_stats(path: str | os.PathLike) -> FIDStats:
    """Read ``mu`` and ``sigma`` (and ``n`` if present) from a pytorch-fid ``.npz`` file.

    Raises FileNotFoundError naming the path, and ValueError for a file
    without ``mu`` / ``sigma`` or with shapes other than [d] and [d, d].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics file not found: {path} (write one with ganfn.metrics.save_stats "
                                "or `python -m pytorch_fid --save-stats DIR OUT.npz`)")
    with np.load(path, allow_pickle=False) as f:
        if "mu" not in f or "sigma" not in f:
            raise ValueError(f"{path} is not a FID statistics file: it holds {sorted(f.files)}, expected 'mu' and "
                             "'sigma'")
        mu, sigma = torch.from_numpy(f["mu"][:]).double(), torch.from_numpy(f["sigma"][:]).double()
        n = int(f["n"]) if "n" in f else None
    d = mu.shape[0] if mu.dim() == 1 else -1
    if mu.dim() != 1 or tuple(sigma.shape) != (d, d):
        raise ValueError(f"{path}: mu must be [d] and sigma [d, d], got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    return FIDStats(mu, sigma, n)


def fid(
    fake: Tensor | Iterable[Tensor] | FIDStats,
    reference: Tensor | Iterable[Tensor] | FIDStats | str | os.PathLike,
    extractor: Extractor,
) -> dict[str, float | int | None]:
    """``{"FID": value, "n": generated images, "n_ref": reference images}``.

    ``fake`` / ``reference``: images (a tensor or an iterable of batches),
    precomputed :class:`FIDStats`, or (reference only) a ``.npz`` path.
    The key is ``FID`` only for Inception features; another extractor's
    figure is named ``FD-<name>``.
    """
    if isinstance(reference, (str, os.PathLike)):
        reference = load_stats(reference)
    fs = fake if isinstance(fake, FIDStats) else fid_stats(fake, extractor)
    rs = reference if isinstance(reference, FIDStats) else fid_stats(reference, extractor)
    if fs.mu.shape != rs.mu.shape:
        raise ValueError(f"feature dimensions differ: generated d={fs.mu.shape[0]}, reference d={rs.mu.shape[0]} "
                         "(statistics from another network?)")
    key = "FID" if getattr(extractor, "kind", "") == "inception" else f"FD-{getattr(extractor, 'name', 'custom')}"
    value = float(frechet_distance_from_stats(fs.mu, fs.sigma, rs.mu, rs.sigma))
    return {key: value, "n": fs.n, "n_ref": rs.n}


def reference_stats(
    path: str | os.PathLike | None, real: Callable[[], Iterable[Tensor]], extractor: Extractor
) -> FIDStats:
    """Reference statistics, cached in ``path``: read it if it exists, else compute
    them from the batches ``real()`` yields and (with a path) write them there.

    The cache holds no record of which network made it: keep one file per
    weights file (a mismatch in feature size is caught by :func:`fid`).
    """
    if path is not None and Path(path).is_file():
        return load_stats(path)
    stats = fid_stats(real(), extractor)
    if path is not None:
        save_stats(path, stats)
    return stats
