"""The ``ganfn`` command: ``ganfn train``, ``ganfn sweep`` and ``ganfn eval``.

Argument parsing and checking only: a train or sweep run is built, trained and
reported by :func:`ganfn.cli_train.run` (through :func:`ganfn.presets.build` and
:func:`ganfn.loop.fit`). Settings are applied in
this order, later ones winning: built-in defaults, ``--preset``, ``--config``
(TOML), then the options given on the command line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from . import cli_train
from . import presets as P
from .cli_train import say
from .config import help_text
from .interrupt import EXIT_STATUS
from .validate import Range, check_range

__all__ = ["main", "make_parser", "negative_values"]

_CHOICES = {
    "model": ["mlp", "dcgan", "sngan", "resnet", "acgan", "r3gan", "stylegan2"],
    "loss": ["non_saturating", "minimax", "wasserstein", "hinge", "least_squares", "rpgan", "ragan", "acgan"],
    "optimizer": ["adam", "adamw", "rmsprop", "sgd"],
    "precision": ["fp32", "bf16", "fp16"],
    "on_nonfinite": ["stop", "rollback", "raise"],
    "split": ["batch", "members"],
    "g_norm": ["batch", "layer", "none"],
    "d_norm": ["batch", "layer", "none"],
}
_METAVAR = {"data": "NAME|PATH", "seeds": "N", "run_dir": "DIR", "grid": "SPEC", "pbt_every": "N", "pbt_space": "SPEC",
            "halving_at": "STEPS", "pbt_metric": "NAMES", "init_from": "RUN"}
_SWEEP_ONLY = ("grid", "pbt_every", "pbt_fraction", "pbt_space", "pbt_metric", "halving_at", "halving_refill", "split")
_TYPES = {"int": int, "float": float, "str": str}


def _field_type(name: str) -> type:
    ann = str(P.FIELDS[name].type)
    for key in ("int", "float", "str"):
        if ann.startswith(key):
            return _TYPES[key]
    return str


def _help(name: str) -> str:
    """An option's help (the Config field's metadata) with its default: the Config default, or the text's own
    "(default: ...)" where None means more (tests/test_config.py checks that every such text says so)."""
    text = help_text(P.FIELDS[name])
    default = P.FIELDS[name].default
    if "(default" in text or "Default:" in text or P.FIELDS[name].type in ("bool", bool) or name == "grid" \
            or default is None:
        return text
    return f"{text} (default: {default})"


def _add_train_options(p: argparse.ArgumentParser, *, sweep: bool) -> None:
    p.add_argument("--preset", choices=sorted(P.PRESETS), help="start from a named published setup: "
                   + "; ".join(f"{k}" for k in P.PRESETS) + " (see ganfn.presets)")
    p.add_argument("--config", metavar="FILE", help="TOML file with the same settings (option names with _ or -)")
    p.add_argument("--resume", metavar="RUN_DIR|CKPT", help="continue a run from its newest checkpoint (bit-identical "
                   "to an uninterrupted run); takes the run's saved settings, options given here override them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (evaluation lines are still printed)")
    p.add_argument("--mlflow", action="store_true", help="also log to MLflow: MLFLOW_TRACKING_URI, else RUN_DIR/mlruns "
                   "(pip install 'ganfn[mlflow]'); a stacked run's members as runs nested under the sweep's")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases, offline unless WANDB_MODE says "
                   "otherwise, into RUN_DIR/wandb (pip install 'ganfn[wandb]'); a stacked run's members as one group")
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
        p.add_argument(flag, dest=name, **kw)


CACHE_HELP = ("GANFN_CACHE: the folder of the scoring networks ganfn trains once and caches with a checksum "
              "(default: ~/.cache/ganfn).")
ENV_HELP = (f"environment: {CACHE_HELP} GANFN_DATA_ROOT, when set: the folder replacing every default data folder "
            "(Fashion-MNIST from $GANFN_DATA_ROOT/fashion-mnist, torchvision's files, mnist_5k.csv.gz); "
            "--data-root wins. Ctrl-C or SIGTERM ends a run after the current step with its checkpoint and files "
            f"written, and exits with status {EXIT_STATUS}.")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfn", description="Functional GAN training on torch.func.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sweep,eval,sample,export}")
    sub.required = True
    t = sub.add_parser("train",
                       help="train a GAN (no options: a DCGAN on scikit-learn's digits, about a minute on a "
                            "2-core CPU)",
                       description="Train a GAN. With no options: a small DCGAN on scikit-learn's 8x8 digits "
                                   f"({P.DEFAULT_STEPS} steps, about a minute on a 2-core CPU), "
                                   "writing TensorBoard logs, samples.png, losses.png, metrics.json and "
                                   "checkpoints under runs/.", epilog=ENV_HELP)
    _add_train_options(t, sweep=False)
    s = sub.add_parser("sweep", help="train every combination of a hyperparameter grid as one vmapped run",
                       description="Train every member of --grid (times --seeds) as one stacked, vmapped run and print "
                                   "the members sorted by the quality figure.", epilog=ENV_HELP)
    _add_train_options(s, sweep=True)
    e = sub.add_parser("eval", help="print the quality figures of a finished run (each member of a stacked run)",
                       epilog=f"environment: {CACHE_HELP}")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by ganfn train / sweep")
    e.add_argument("--n-eval", type=int, default=None, help="generated samples per member (default: the run's setting)")
    e.add_argument("--device", default="cpu", help="cpu or cuda")
    e.add_argument("--fid-weights", metavar="FILE", help="Inception-v3 weights file: adds FID and KID, computed as "
                   "pytorch-fid does (its pt_inception-2015-12-05-6726825d.pth gives figures comparable with papers)")
    e.add_argument("--fid-ref-stats", metavar="STATS.npz", help="reference statistics in pytorch-fid's .npz format: "
                   "read if the file exists, else computed from the run's training data and written there")
    from .cli_sample import add_parsers

    add_parsers(sub)
    return parser


def _config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[P.Config, str | None]:
    # --preset not given is None, not absent: it must not clear a resumed run's preset (which builds its GAN).
    given = {k: v for k, v in vars(args).items() if k in P.FIELDS and not (k == "preset" and v is None)}
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
            cfg = P.saved(json.loads(cfg_file.read_text()), str(cfg_file))
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
    for name in ("steps", "batch_size", "seeds", "n_critic", "n_gen", "log_every", "image_every", "eval_every", "keep",
                 "n_eval"):
        v = getattr(cfg, name)
        if v is None and name == "n_eval":  # the figure's own protocol
            continue
        if not isinstance(v, int) or v < (0 if name == "steps" else 1):
            parser.error(f"--{name.replace('_', '-')} must be an integer >= {0 if name == 'steps' else 1}, got {v!r}")
    for name in ("lr_g", "lr_d"):  # the library allows 0 (a frozen network); a command-line run needs both to learn
        try:
            check_range(name, getattr(cfg, name), Range(0.0, low_open=True))
        except ValueError:
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {getattr(cfg, name)!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {cfg.device}: CUDA is not available on this machine (use --device cpu)")


def _trackers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Any]:
    """The trackers ``--mlflow`` / ``--wandb`` ask for (``ganfn.loggers``); a missing package is a usage error."""
    from . import loggers

    try:
        return [getattr(loggers, name)() for name in ("mlflow", "wandb") if getattr(args, name)]
    except ImportError as e:
        parser.error(str(e))


def negative_values(argv: Sequence[str]) -> list[str]:
    """``--opt -1e-4`` rewritten as ``--opt=-1e-4``: argparse reads ``-1e-4`` (unlike ``-1``) as an option
    and would stop with "expected one argument"; nothing after ``--`` is touched."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return out + list(argv[i:])
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("--") and "=" not in arg and nxt.startswith("-") and _is_number(nxt):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (its ``error`` names the subcommand in its usage line)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ganfn`` console script; returns the exit status."""
    parser = make_parser()
    args = parser.parse_args(negative_values(sys.argv[1:] if argv is None else argv))
    if args.command == "eval":
        from .cli_eval import run_eval

        return run_eval(args, parser)
    if args.command in ("sample", "export"):
        from . import cli_sample

        return cli_sample.run(args, _subcommand(parser, args.command))
    sub = _subcommand(parser, args.command)  # the subcommand's parser, for its errors
    cfg, resume = _config_from_args(args, sub)
    if args.command == "sweep" and not cfg.grid:
        sub.error("the following arguments are required: --grid (or --resume RUN_DIR of a sweep)")
    from . import distributed as gd

    # Under torchrun (WORLD_SIZE set) join the process group: gloo on CPU, NCCL
    # on GPU; each rank trains on its shard and rank 0 alone prints and writes.
    joined = not gd.is_distributed()
    world = gd.setup()
    try:
        if world.rank != 0:
            sys.stdout = open(os.devnull, "w")  # closed with the process
        trackers = _trackers(args, sub)
        _check(cfg, sub)
        _grid_penalty(cfg, sub, say)
        return cli_train.run(cfg, resume, progress=not args.no_progress and sys.stderr.isatty(), parser=sub,
                             trackers=trackers)
    except KeyboardInterrupt:  # before training started, or a second signal while the files were being written
        print(f"{sub.prog}: interrupted; files already written are kept (a run with checkpoints continues with "
              f"{sub.prog} --resume {cfg.run_dir or 'RUN_DIR'})", file=sys.stderr)
        return EXIT_STATUS
    finally:
        if joined:  # leave only a group this call joined
            gd.teardown()


if __name__ == "__main__":
    sys.exit(main())
