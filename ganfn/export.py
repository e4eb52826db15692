"""Generators and samples out of a run: the run's generator rebuilt from its folder,
exported to a file that loads without the run, and the latent helpers of ``ganfn sample``.

- :func:`load_run`: a run folder (``config.json`` + ``checkpoints/``) as the
  :class:`~ganfn.GAN` it trained and its newest checkpoint's state.
- :func:`member`: one member's state of a stacked run (or the single run's).
- :func:`save_generator` / :func:`load_generator`: an exported generator file.
- :func:`slerp`, :func:`truncate`, :func:`to_uint8`: latents and pixels.

An exported file is one ``torch.save`` of plain containers and tensors::

    {"format": "ganfn-generator", "version": 1, "sha256": str,
     "builder": "ganfn.models.build",   (a registered name, see BUILDERS)
     "kwargs": {...},                   (the builder's keyword arguments: plain values)
     "latent_shape": [...], "sample_shape": [...], "num_classes": int | None,
     "state_dict": {name: tensor},      (the weights gan.sample uses: G's EMA, and its buffers)
     "source": {"run": str, "step": int, "member": int | None}}

:func:`load_generator` reads it with ``torch.load(weights_only=True)`` and builds
the network by the registered builder's name, so loading a file runs no code
from it: a file that holds a pickled function or class is refused.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from . import checkpoint, models, sampling
from .gan import GAN
from .state import TrainState

if TYPE_CHECKING:  # pragma: no cover - presets (data, evaluators) load only when a run folder is read
    from . import presets as P

__all__ = ["LoadedRun", "load_run", "member", "generator_weights", "save_generator", "load_generator", "BUILDERS",
           "slerp", "truncate", "to_uint8", "FORMAT", "VERSION"]

FORMAT = "ganfn-generator"
VERSION = 1

#: The builders an exported file may name: ``name -> fn(**kwargs) -> (G, D, latent)``.
BUILDERS: dict[str, Callable[..., tuple[nn.Module, nn.Module, Any]]] = {"ganfn.models.build": models.build}


class LoadedRun(NamedTuple):
    """A run folder read back: its settings, the GAN they build, the newest checkpoint's state."""

    path: Path
    cfg: "P.Config"
    gan: GAN
    state: TrainState
    step: int
    checkpoint: Path
    sample_shape: tuple[int, ...]
    num_classes: int | None

    @property
    def members(self) -> int | None:
        """S for a stacked run, None for a single one."""
        return int(self.state.step.shape[0]) if self.state.step.dim() else None


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedRun:
    """The run in ``run_dir`` (written by ``ganfn train`` / ``sweep``): its config,
    GAN and newest verified checkpoint. The data is read once for the sample
    shape and the number of classes, as ``ganfn eval`` does.

    Raises ``FileNotFoundError`` naming what is missing (the folder, its
    ``config.json`` or any checkpoint)."""
    from . import presets as P

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no such run directory: {run}")
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found (was {run} written by ganfn train or ganfn sweep?)")
    cfg = P.merge(P.Config(), json.loads(cfg_file.read_text()), str(cfg_file))
    found = checkpoint.CheckpointManager(run / "checkpoints").load_latest(map_location=device)
    if found is None:
        raise FileNotFoundError(f"no checkpoint (ckpt-*.pt) in {run / 'checkpoints'}: has the run saved one yet?")
    path, c = found
    data = P.load_data(cfg)
    shape, classes = P.sample_shape(data), P.num_classes(cfg, data)
    gan = P.build_gan(cfg, shape, classes)
    return LoadedRun(run, cfg, gan, c["state"], int(c["step"]), path, shape, classes)


def member(run: LoadedRun, index: int | None) -> TrainState:
    """Member ``index`` of a stacked run's state, or a single run's state (``index`` None).

    ``ValueError`` when a stacked run gets no index, a single run gets one, or
    the index is out of range."""
    s = run.members
    if s is None:
        if index not in (None, 0):
            raise ValueError(f"{run.path} is a single run (no members): drop --member")
        return run.state
    if index is None:
        raise ValueError(f"{run.path} is a stacked run of {s} members: choose one with --member (0 to {s - 1})")
    if not 0 <= index < s:
        raise ValueError(f"--member {index} is out of range: {run.path} has members 0 to {s - 1}")
    from .ensemble import unstack

    return unstack(run.state)[index]


def generator_weights(gan: GAN, state: TrainState, *, standing: int = 0) -> dict[str, Tensor]:
    """The weights and buffers ``gan.sample(state, z, standing=standing)`` runs G
    with, as one state dict: G's EMA when the setup keeps one, and BatchNorm's
    standing statistics when ``standing > 0``."""
    sampling.check_single(state)
    params = gan.sample_params(state)
    buffers = sampling.standing_stats(gan, state, torch.Generator().manual_seed(0), batches=standing) if standing \
        else state.g.buffers
    return {k: v.detach().cpu().contiguous().clone() for k, v in {**params, **buffers}.items()}


def save_generator(path: str | os.PathLike, weights: dict[str, Tensor], *, builder: str, kwargs: dict[str, Any],
                   latent_shape: tuple[int, ...], sample_shape: tuple[int, ...], num_classes: int | None,
                   source: dict[str, Any] | None = None) -> Path:
    """Write an exported generator file (the module docstring's format) atomically; returns its path.

    ``builder`` must be a key of :data:`BUILDERS`; ``kwargs`` plain values. The
    network is built once here and loaded with ``weights`` (strict), so a file
    that would not load is never written."""
    _build(builder, kwargs).load_state_dict(weights, strict=True)
    obj = {"format": FORMAT, "version": VERSION, "builder": builder, "kwargs": dict(kwargs),
           "latent_shape": [int(v) for v in latent_shape], "sample_shape": [int(v) for v in sample_shape],
           "num_classes": num_classes, "state_dict": dict(weights), "source": dict(source or {})}
    obj["sha256"] = checkpoint.digest(obj)
    return checkpoint.atomic_save(obj, path)


def _build(builder: str, kwargs: dict[str, Any]) -> nn.Module:
    if builder not in BUILDERS:
        raise ValueError(f"unknown generator builder {builder!r}: known ones are {sorted(BUILDERS)}")
    g, _, _ = BUILDERS[builder](**kwargs, generator=torch.Generator().manual_seed(0))  # weights are replaced below
    return g


def load_generator(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """The generator exported to ``path`` (``ganfn export``), in eval mode and frozen.

    Call it as the run's GAN does: ``G(z)`` for latents ``z`` ``[N, *G.latent_shape]``,
    ``G(z, y)`` with int64 classes ``y`` ``[N]`` for a conditional run; its output
    equals ``gan.sample(state, z[, y])`` of the exported state. Attributes
    ``latent_shape``, ``sample_shape`` and ``num_classes`` describe it.

    The file is read with ``torch.load(weights_only=True)``: no code in it runs.
    ``ValueError`` for a file holding anything but tensors and plain containers
    (a pickled callable, say), for a file that is not an exported generator, of
    another version, or whose contents fail their checksum."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported generator file at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path} holds objects other than tensors and plain containers (e.g. a pickled function or "
                         "class); ganfn refuses to load it, because unpickling them would run code from the file. "
                         f"Load only files written by ganfn export. ({str(e).splitlines()[0]})") from e
    except Exception as e:  # re-raised with the path named
        raise ValueError(f"{path} is not a readable exported generator: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not an exported ganfn generator (no '{FORMAT}' marker); "
                         "write one with ganfn export")
    if obj.get("version") != VERSION:
        raise ValueError(f"{path} is an exported generator of version {obj.get('version')}, but this ganfn reads "
                         f"version {VERSION}: export it again with this release")
    stored = obj.pop("sha256", None)
    if stored != checkpoint.digest(obj):
        raise ValueError(f"{path} is damaged: its contents do not match the SHA-256 stored in it")
    g = _build(obj["builder"], obj["kwargs"])
    g.load_state_dict(obj["state_dict"], strict=True)
    g.to(map_location).eval().requires_grad_(False)
    # plain attributes (what nn.Module.__setattr__ does with non-tensors), written so type checkers accept them
    vars(g).update(latent_shape=tuple(obj["latent_shape"]), sample_shape=tuple(obj["sample_shape"]),
                   num_classes=obj["num_classes"])
    return g


# ----------------------------------------------------------------------------------- latents and pixels


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` ``[N, *latent]`` at
    fractions ``t`` ``[T]``: ``[N, T, *latent]``, ``a`` at ``t = 0`` and ``b`` at ``t = 1``.

    The angle is that between the flattened latents; where they are (nearly)
    parallel it falls back to linear interpolation. Slerp suits Gaussian latents:
    a straight line between two draws passes through low-norm latents a
    Gaussian rarely makes (White, 2016, "Sampling generative networks")."""
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-30)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]  # [N, 1]
    tt = t.double()[None, :]  # [1, T]
    so = torch.sin(omega)
    near = so.abs() < 1e-6
    wa = torch.where(near, 1 - tt, torch.sin((1 - tt) * omega) / torch.where(near, torch.ones_like(so), so))
    wb = torch.where(near, tt, torch.sin(tt * omega) / torch.where(near, torch.ones_like(so), so))
    out = wa[..., None] * fa[:, None] + wb[..., None] * fb[:, None]  # [N, T, D]
    return out.to(a.dtype).reshape(a.shape[0], t.shape[0], *a.shape[1:])


def truncate(z: Tensor, psi: float, mean: Tensor | None = None) -> Tensor:
    """The truncation trick as StyleGAN writes it: latents moved toward the mean
    latent, ``mean + psi * (z - mean)`` (Karras et al., 2019, sec. 2.1 and App. B).

    For ganfn's models the latent is ``z ~ N(0, I)`` itself (no mapping
    network), whose mean is 0 (``mean=None``): ``psi * z``. ``psi = 1`` leaves
    ``z`` alone; smaller values trade variety for typical samples; 0 gives every
    sample the mean latent's image. ``ValueError`` unless ``psi`` is a number >= 0."""
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not psi >= 0:
        raise ValueError(f"truncation psi must be a number >= 0 (1: none; StyleGAN uses 0.5 to 0.7), got {psi!r}")
    return psi * z if mean is None else mean + psi * (z - mean)


def to_uint8(images: Tensor) -> Tensor:
    """Samples ``[N, C, H, W]`` in [-1, 1] as the bytes a PNG holds: uint8 ``[N, H, W, C]``
    (values clamped to [-1, 1], then ``round((x + 1) / 2 * 255)``, as the run's sample grids)."""
    if images.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()
