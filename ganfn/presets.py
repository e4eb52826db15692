"""Run configurations: the settings of ``ganfn train`` and common published setups as named presets.

A :class:`Config` holds every setting of a run (the same names are the
``ganfn train`` options, with ``-`` for ``_``, and the keys of a ``--config``
TOML file). :func:`build` turns it into ``(gan, data, evaluator)`` using only
public pieces (``ganfn.models.build``, ``ganfn.data.load``, ``ganfn.GAN``).

Presets (:data:`PRESETS`) reproduce common published and tutorial setups:

- ``lightning-bce``: BCE (non-saturating) loss, AdamW for G and D with
  exponential learning-rate decay, gradient clipping, DCGAN on digits.
- ``mlp-mnist``: the MLP GAN of Goodfellow et al. (2014), as tutorials build it (latent 100, one hidden layer of 128) on
  MNIST, Adam 2e-4 with betas (0.5, 0.999), batch 64, one-sided label
  smoothing (real label 0.9).
- ``wgan-gp``: Wasserstein loss with gradient penalty 10, 5 critic
  steps per G step, Adam 1e-4 betas (0.0, 0.9) (Gulrajani et al.).
- ``wgan-clip``: Wasserstein loss with weight clipping at 0.01,
  RMSprop 5e-5, 5 critic steps per G step (Arjovsky et al.).
- ``lsgan``: least-squares loss (Mao et al., 2017), Adam 2e-4 betas (0.5, 0.999).
- ``r3gan``: R3GAN's objective (Huang et al., 2024) on the digits DCGAN: the
  relativistic pairing loss (RpGAN) with R1 and R2 (0.1 each), Adam (0, 0.99).
- ``dcgan-dogs``: DCGAN (Radford et al., 2016) at 64x64 on an image folder (the Stanford Dogs
  layout; give its path with ``--data``), classic batch-normalised D, soft real
  labels (``real_label`` 0.5) and separate learning
  rates for G (2e-4) and D (1e-4).
- ``digits-cond``: class-conditional digits (Miyato & Koyama 2018): DCGAN G
  with conditional batch norm, SNGAN-projection D with spectral norm, hinge
  loss, Adam 1e-3 decayed linearly to 0, EMA 0.999; 4 seeds as one vmapped
  run of 3,000 steps.
- ``acgan-digits``: ACGAN on digits (Odena et al. 2017): the same G, an
  auxiliary-classifier D (spectral norm), BCE + class cross-entropy.
- ``r3gan-cifar10``: R3GAN's CIFAR-10 setup (Huang et al., 2024; official
  ``train.py`` preset ``CIFAR10``): the R3GAN networks, :func:`ganfn.recipes.r3gan`
  (RpGAN + R1 + R2 with gamma, lr, Adam's beta2 and the EMA on schedules).
- ``stylegan2-ada-cifar10``: StyleGAN2-ADA's ``cifar`` config (Karras et al.,
  2020, "Training Generative Adversarial Networks with Limited Data", Table 1
  and ``train.py``): StyleGAN2 networks, :func:`ganfn.recipes.stylegan2_ada`
  (non-saturating loss, lazy R1, EMA with ramp-up, ADA).
- ``ring8-hinge``: the ring8 setup of ``bench/quality.py`` that meets the README's
  mode-coverage target: MLP (latent 2, 2 x 128), hinge + R1 0.1, Adam 2e-3
  (0.5, 0.9) decayed linearly to 0, EMA 0.999, batch 256, 8,000 steps.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from . import data as gdata
from . import losses, models, optim, parts, penalties, recipes
from .config import DEFAULT_STEPS, FIELDS, Config
from .evaluation import Evaluator
from .gan import GAN
from .init_from import weights_init_from
from .presets_eval import is_folder, make_evaluator
from .presets_folder import FolderChoice, choose
from .presets_modern import MODERN_PRESETS, RECIPE_PRESETS, recipe_gan

__all__ = ["Config", "PRESETS", "DEFAULT_STEPS", "build", "build_gan", "model_args", "sample_shape", "load_data",
           "num_classes", "make_evaluator", "from_preset", "load_toml", "merge", "saved", "choose_folder", "is_folder"]




PRESETS: dict[str, dict[str, Any]] = {
    "lightning-bce": dict(
        ema_decay=None, data="digits", model="dcgan", loss="non_saturating", optimizer="adamw", lr_g=2e-4, lr_d=2e-4,
        beta1=0.5, beta2=0.999, weight_decay=1e-2, lr_decay=0.99, lr_decay_every=100, grad_clip=10.0,
    ),
    "mlp-mnist": dict(
        ema_decay=None, data="mnist", model="mlp", latent_dim=100, loss="non_saturating",
        optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, real_label=0.9, batch_size=64,
    ),
    "wgan-gp": dict(
        ema_decay=None, data="digits", model="dcgan", d_norm="none", loss="wasserstein",
        penalty="gp", penalty_weight=10.0, n_critic=5, optimizer="adam", lr_g=1e-4, lr_d=1e-4, beta1=0.0, beta2=0.9,
    ),
    "wgan-clip": dict(
        ema_decay=None, data="digits", model="dcgan", d_norm="none", loss="wasserstein",
        penalty="weight_clip", penalty_weight=0.01, n_critic=5, optimizer="rmsprop", lr_g=5e-5, lr_d=5e-5,
    ),
    "lsgan": dict(
        ema_decay=None, data="digits", model="dcgan", loss="least_squares", optimizer="adam", lr_g=2e-4,
        lr_d=2e-4, beta1=0.5, beta2=0.999,
    ),
    "ring8-hinge": dict(
        # The setup bench/quality.py checks the README's ring8 target with: 16/16 seeds
        # at 8/8 modes and >= 90% high-quality samples (bench/README_quality.md).
        data="ring8", model="mlp", latent_dim=2, hidden=128, depth=2, loss="hinge", penalty="r1", penalty_weight=0.1,
        optimizer="adam", lr_g=2e-3, lr_d=2e-3, beta1=0.5, beta2=0.9, lr_linear_decay=True, ema_decay=0.999,
        batch_size=256, steps=8000,
    ),
    "digits-cond": dict(
        # Conditional batch norm starts class-blind (gain 1, shift 0): at 2e-4 the per-class
        # parameters moved too slowly (17% class accuracy after 2,000 steps); 1e-3 decayed to 0 works.
        data="digits", conditional=True, model="sngan", width=32, latent_dim=32, loss="hinge", optimizer="adam",
        lr_g=1e-3, lr_d=1e-3, beta1=0.5, beta2=0.999, lr_linear_decay=True, ema_decay=0.999, batch_size=64,
        steps=3000, seeds=4, eval_every=1000,
    ),
    "acgan-digits": dict(
        data="digits", conditional=True, model="acgan", width=32, latent_dim=32, loss="acgan", optimizer="adam",
        lr_g=1e-3, lr_d=1e-3, beta1=0.5, beta2=0.999, lr_linear_decay=True, ema_decay=0.999, batch_size=64,
        steps=4000, eval_every=1000,
    ),
    "r3gan": dict(
        # R3GAN's objective (Huang et al., 2024): the relativistic pairing loss with
        # both zero-centred penalties, Adam betas (0, 0.99), on the DCGAN digits model.
        data="digits", model="dcgan", d_norm="none", loss="rpgan", penalty="r1+r2", penalty_weight=0.1,
        optimizer="adam", lr_g=2e-4, lr_d=2e-4, beta1=0.0, beta2=0.99, ema_decay=0.999,
    ),
    **MODERN_PRESETS,  # r3gan-cifar10, stylegan2-ada-cifar10: built from ganfn.recipes (ganfn/presets_modern.py)
    "dcgan-dogs": dict(
        ema_decay=None, data="data/dogs", image_size=64, model="dcgan", width=64, latent_dim=100,
        g_norm="batch", d_norm="batch",
        loss="non_saturating", real_label=0.5, optimizer="adam", lr_g=2e-4, lr_d=1e-4, beta1=0.5, beta2=0.999,
        batch_size=64, steps=20000,
    ),
}


def saved(settings: Mapping[str, Any], source: str = "config.json") -> Config:
    """The :class:`Config` of a run's saved ``config.json``. A folder run saved before
    folders chose their own channels and size (no ``channels`` key) trained at
    3 channels and, without ``image_size``, 64 pixels: it is rebuilt so."""
    cfg = merge(Config(), settings, source)
    if "channels" not in settings and is_folder(cfg):
        cfg = dataclasses.replace(cfg, channels=3, image_size=cfg.image_size or 64)
    return cfg


def merge(base: Config, overrides: Mapping[str, Any], source: str = "settings") -> Config:
    """``base`` with ``overrides`` applied; keys may use ``-`` or ``_``. Unknown keys raise ``ValueError``."""
    clean = {}
    for k, v in overrides.items():
        key = k.replace("-", "_")
        if key not in FIELDS:
            raise ValueError(f"unknown setting {k!r} in {source}; known settings: {', '.join(sorted(FIELDS))}")
        clean[key] = v
    return dataclasses.replace(base, **clean)


def from_preset(name: str) -> Config:
    """The :class:`Config` of preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}")
    return merge(Config(), {**PRESETS[name], "preset": name}, f"preset {name}")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file (top-level keys, or a ``[train]`` table)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError as e:
            raise RuntimeError("reading a TOML config on Python 3.10 needs the 'tomli' package (pip install "
                               "tomli)") from e
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from e
    return dict(doc.get("train", doc))


# ----------------------------------------------------------------------------------- building


CONV_MODELS = ("dcgan", "sngan", "resnet", "acgan", "r3gan", "stylegan2")


def conv_size(size: int) -> int:
    """The image size a conv model takes for data of ``size`` pixels: the next power of two >= 8 (28 -> 32)."""
    return max(8, 1 << (int(size) - 1).bit_length())


def choose_folder(cfg: Config) -> FolderChoice | None:
    """For folder data: scan its headers (an unreadable file raises ``ganfn.data.BadImageError``
    naming it, unless ``cfg.skip_bad_images``) and choose the channels and image size
    (:func:`ganfn.presets_folder.choose`). None for named data sets."""
    if not is_folder(cfg):
        return None
    path = Path(cfg.data).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--data {cfg.data!r}: not one of {', '.join(gdata.NAMES)} and no such folder or zip archive: "
            f"{path.resolve()}")
    scan = gdata.scan_images(path, max_images=cfg.max_images, skip_bad=cfg.skip_bad_images)
    return choose(scan, cfg.model, conv_size if cfg.model in CONV_MODELS else None,
                  channels=cfg.channels, image_size=cfg.image_size)


def load_data(cfg: Config, folder: FolderChoice | None = None) -> Tensor | Any:
    """The training data: a tensor [N, *sample], an image source for a folder or
    zip archive (``ganfn.data.images_source``) or, for ring8/grid25, a sampler.
    With ``cfg.conditional``: an ``(images, labels)`` pair, or a sampler of pairs.

    Without ``image_size``, named data sets keep their own size, except that the
    conv models get the next power of two (28 -> 32, :func:`conv_size`); a
    folder's channels and size come from ``folder`` (default: :func:`choose_folder`)."""
    lab = cfg.conditional
    if cfg.data in gdata.SAMPLERS:
        return (gdata.LABELLED_SAMPLERS if lab else gdata.SAMPLERS)[cfg.data]
    if cfg.data == "digits":
        return gdata.digits("train", cfg.image_size or 8, labels=lab)
    if cfg.data == "stacked_digits":  # fresh triples every batch
        return gdata.stacked_digits_sampler(cfg.image_size or 8, labels=lab)
    if cfg.data in gdata.NAMES:
        out = gdata.load(cfg.data, size=cfg.image_size, root=cfg.data_root, labels=lab)
        x, y = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        x = gdata.resize(x, conv_size(x.shape[-1])) if cfg.image_size is None and cfg.model in CONV_MODELS else x
        return (x, *y) if lab else x
    folder = folder or choose_folder(cfg)
    assert folder is not None  # a folder (is_folder)
    path = Path(cfg.data).expanduser()
    kw: dict[str, Any] = dict(channels=folder.channels, max_images=cfg.max_images, exclude=folder.scan.excluded)
    if not lab:
        # Folders larger than memory: streamed by worker processes, or preloaded as uint8.
        return gdata.images_source(path, folder.size, stream=not cfg.preload, workers=cfg.data_workers,
                                   flip=cfg.flip, **kw)
    try:  # labelled folders are loaded whole (streamed sources carry no labels yet)
        return gdata.image_folder(path, folder.size, labels=lab, **kw)
    except gdata.BadImageError:
        raise
    except ValueError as e:
        if "sub-folder" not in str(e):
            raise
        raise ValueError(f"--conditional needs labelled data, and {path} has none: {e}") from e


def num_classes(cfg: Config, data: Any) -> int | None:
    """The number of classes of a conditional run's data (None unless ``cfg.conditional``)."""
    if not cfg.conditional:
        return None
    if cfg.data in gdata.NUM_CLASSES:
        return gdata.NUM_CLASSES[cfg.data]
    return int(data[1].max()) + 1  # a folder: labels 0..K-1, one per sub-folder


def sample_shape(data: Any) -> tuple[int, ...]:
    """The shape of one sample of :func:`load_data`'s data (a sampler is called once, for one sample)."""
    if isinstance(data, (Tensor, *gdata.ImageSource)):
        return tuple(data.shape[1:])
    first = data(1, torch.Generator().manual_seed(0)) if callable(data) else data
    return tuple((first if isinstance(first, Tensor) else first[0]).shape[1:])


def model_args(cfg: Config, sample_shape: tuple[int, ...], classes: int | None) -> dict[str, Any]:
    """The keyword arguments of ``ganfn.models.build`` for a config (plain values:
    they are stored in exported generators and rebuild the same networks)."""
    kw: dict[str, Any] = {"name": cfg.model, "data_shape": [int(s) for s in sample_shape], "latent_dim": cfg.latent_dim,
                          "num_classes": classes if cfg.conditional else None}
    if cfg.model in CONV_MODELS:
        kw.update(width=cfg.width, g_norm=cfg.g_norm, d_norm=cfg.d_norm)
    else:
        kw.update(hidden=cfg.hidden, depth=cfg.depth)
    return kw


def build_gan(cfg: Config, sample_shape: tuple[int, ...], classes: int | None = None) -> GAN:
    """The :class:`GAN` a config describes, for data of ``sample_shape`` (with
    ``classes`` classes when ``cfg.conditional``; default: the named data set's)."""
    classes = classes if classes is not None else gdata.NUM_CLASSES.get(cfg.data)
    if cfg.conditional and classes is None:
        raise ValueError("--conditional needs the number of classes of the data")
    if cfg.model == "acgan" and not cfg.conditional:
        raise ValueError("--model acgan is class-conditional: add --conditional (on data with labels)")
    G, D, latent = models.build(**model_args(cfg, sample_shape, classes))
    if cfg.preset in RECIPE_PRESETS:  # the papers' schedules: built from ganfn.recipes
        init = weights_init_from(cfg.init_from) if cfg.init_from else None
        return recipe_gan(cfg, from_preset(cfg.preset), G, D, latent, classes, init)

    def opt(lr: float, updates: int) -> optim.Optimizer:
        if cfg.lr_decay is not None and cfg.lr_linear_decay:
            raise ValueError("choose one learning-rate schedule: --lr-decay (exponential) or --lr-linear-decay")
        schedule = optim.exponential_decay(cfg.lr_decay, cfg.lr_decay_every) if cfg.lr_decay is not None else None
        if cfg.lr_linear_decay:
            schedule = optim.linear_decay(updates)
        name = cfg.optimizer
        if name in ("adam", "adamw"):
            wd = {"weight_decay": cfg.weight_decay} if (cfg.weight_decay or name == "adam") else {}
            o = optim.get(name, lr=lr, betas=(cfg.beta1, cfg.beta2), schedule=schedule, **wd)
        elif name == "rmsprop":
            o = optim.rmsprop(lr, weight_decay=cfg.weight_decay, schedule=schedule)
        elif name == "sgd":
            o = optim.sgd(lr, momentum=cfg.beta1, weight_decay=cfg.weight_decay, schedule=schedule)
        else:
            raise ValueError(f"unknown optimizer {name!r}: choose adam, adamw, rmsprop or sgd")
        o = optim.clip_by_global_norm(o, cfg.grad_clip) if cfg.grad_clip else o
        # fp16 autocast needs loss scaling, which lives in the (pure) optimizer state.
        return optim.loss_scaled(o) if cfg.precision == "fp16" else o

    ema = cfg.ema_decay or None  # 0: no EMA
    extra = _extra_parts(cfg)
    if ema is not None and cfg.ema_rampup:
        extra.append(parts.ema(ema, rampup=cfg.ema_rampup))
        ema = None
    # Spectral norm where asked for, or where the discriminator declares it wants it
    # (SNGAN, projection, ACGAN, ResNet D).
    sn = bool(cfg.spectral_norm or getattr(D, "wants_spectral_norm", False))
    tricks = recipes.classic(penalties=_penalties(cfg), spectral_norm=sn, instance_noise=cfg.instance_noise,
                             instance_noise_anneal=cfg.instance_noise_anneal, replay_size=cfg.replay_size,
                             replay_fraction=cfg.replay_fraction, d_skip_accuracy=cfg.d_skip_accuracy,
                             g_skip_accuracy=cfg.g_skip_accuracy, ema_decay=ema)
    return GAN(
        G, D, latent_dim=latent,
        loss=losses.with_targets(cfg.loss, real_label=cfg.real_label, fake_label=cfg.fake_label),
        g_optimizer=opt(cfg.lr_g, cfg.steps * cfg.n_gen), d_optimizer=opt(cfg.lr_d, cfg.steps * cfg.n_critic),
        parts=[*tricks, *extra], n_critic=cfg.n_critic, n_gen=cfg.n_gen,
        num_classes=classes if cfg.conditional else None,
        weight_init=weights_init_from(cfg.init_from) if cfg.init_from else None,
    )


def _penalties(cfg: Config) -> list:
    """``--penalty`` (names joined by ``+``, e.g. ``r1+r2``) with ``--penalty-weight``
    and, for gp/r1/r2, ``--r1-every`` (lazy regularisation, StyleGAN2)."""
    if cfg.penalty in (None, "", "none"):
        if cfg.r1_every is not None:
            raise ValueError("--r1-every needs a gradient penalty: add --penalty r1 (or r2, gp)")
        return []
    out = []
    for name in cfg.penalty.split("+"):
        p = penalties.get(name, cfg.penalty_weight)
        if cfg.r1_every is not None and p.term is not None:
            p = p._replace(every=cfg.r1_every)
        out.append(p)
    return out


def _extra_parts(cfg: Config) -> list:
    """The data-efficiency parts the config asks for: ``--augment POLICY``
    (DiffAugment, or ADA with ``--ada-target``) and ``--lecam WEIGHT``."""
    out = []
    if cfg.ada_target is not None:
        out.append(parts.ada(cfg.augment or "color,translation,cutout", target=cfg.ada_target))
    elif cfg.augment not in (None, "", "none"):
        out.append(parts.diffaugment(cfg.augment))
    if cfg.lecam:
        out.append(penalties.lecam(cfg.lecam))
    return out


def build(cfg: Config, folder: FolderChoice | None = None) -> tuple[GAN, Any, Evaluator | None]:
    """``(gan, data, evaluator)`` for a config (loads the data; may train and cache the LeNet).
    ``folder``: a folder's :func:`choose_folder`, when the caller has already scanned it."""
    data = load_data(cfg, folder)
    gan = build_gan(cfg, sample_shape(data), num_classes(cfg, data))
    return gan, data, make_evaluator(cfg, data=data)
