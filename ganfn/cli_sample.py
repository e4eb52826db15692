"""``ganfn sample`` and ``ganfn export``: samples and the generator out of a run folder.

``ganfn sample RUN --n N --out DIR`` writes N PNGs (``000000.png``, ...) at the
run's image size from the newest checkpoint's generator (its EMA when the run
keeps one), the input that external FID tools take; ``--interpolate`` writes one
grid of interpolations instead. ``ganfn export RUN --out FILE`` writes the
generator for :func:`ganfn.load_generator`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import export as E
from . import tensorboard as tb

__all__ = ["add_parsers", "run"]


def add_parsers(sub: Any) -> None:
    """Register the ``sample`` and ``export`` subcommands on ``ganfn``'s subparsers."""
    s = sub.add_parser("sample", help="write N generated PNGs (for FID tools) or an interpolation grid from a run",
                       description="Write --n generated images as PNGs at the run's image size, from the newest "
                                   "checkpoint's generator (its EMA when the run keeps one): the input of external "
                                   "FID tools (a paper's FID uses 50,000).")
    s.add_argument("run_dir", metavar="RUN", help="a folder written by ganfn train / sweep")
    s.add_argument("--n", type=int, required=True, help="images to write (--interpolate: rows of the grid)")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="new or empty folder for the PNGs (000000.png, 000001.png, ...)")
    _common(s)
    s.add_argument("--class", dest="klass", type=int, default=None, metavar="K",
                   help="conditional run: every image of class K (default: classes in turn, image i of class i mod K)")
    s.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                   help="truncation trick (Karras et al., 2019): latents moved toward the mean latent, z -> PSI * z "
                        "(ganfn's latents are N(0, I), mean 0; 1: none; smaller: less varied, more typical images) "
                        "(default: 1)")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents (and of nothing else) (default: 0)")
    s.add_argument("--batch-size", type=int, default=256, help="images per generator call (default: 256)")
    s.add_argument("--interpolate", action="store_true",
                   help="write DIR/interpolation.png instead: --n rows, each a spherical interpolation (slerp) "
                        "between two random latents in --steps columns")
    s.add_argument("--steps", type=int, default=8, help="--interpolate: columns per row (default: 8)")
    e = sub.add_parser("export", help="write a run's generator to a file that ganfn.load_generator reads",
                       description="Write the newest checkpoint's generator (the weights gan.sample uses) to FILE; "
                                   "ganfn.load_generator(FILE) returns it as an nn.Module, without the run folder "
                                   "and without running code from the file.")
    e.add_argument("run_dir", metavar="RUN", help="a folder written by ganfn train / sweep")
    e.add_argument("--out", required=True, metavar="FILE", help="the file to write (refused if it exists)")
    _common(e)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", type=int, default=None, metavar="I",
                   help="stacked run (--seeds / sweep): the member to use (required there)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``ganfn sample`` or ``ganfn export`` (``args.command``); errors exit through ``parser``."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine (use --device cpu)")
    try:
        loaded = E.load_run(args.run_dir, device=args.device)
        state = E.member(loaded, args.member)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        parser.error(f"{args.command}: {e}")
    if args.command == "export":
        return _export(args, parser, loaded, state)
    return _sample(args, parser, loaded, state)


def _export(args: argparse.Namespace, parser: argparse.ArgumentParser, loaded: E.LoadedRun, state: Any) -> int:
    from . import presets as P

    out = Path(args.out)
    if out.exists():
        parser.error(f"export: {out} exists; choose another --out (nothing was written)")
    weights = E.generator_weights(loaded.gan, state, standing=loaded.cfg.standing_stats)
    E.save_generator(out, weights, builder="ganfn.models.build",
                     kwargs=P.model_args(loaded.cfg, loaded.sample_shape, loaded.num_classes),
                     latent_shape=loaded.gan.latent_shape, sample_shape=loaded.sample_shape,
                     num_classes=loaded.gan.num_classes,
                     source={"run": str(loaded.path), "step": loaded.step, "member": args.member})
    print(f"wrote {out}: the generator of {loaded.path} at step {loaded.step}"
          f"{f' (member {args.member})' if args.member is not None else ''}; load it with ganfn.load_generator")
    return 0


def _labels(args: argparse.Namespace, parser: argparse.ArgumentParser, k: int | None, n: int) -> torch.Tensor | None:
    """Classes of ``n`` samples: all ``--class`` or ``i mod K``; None for an unconditional run."""
    if k is None:
        if args.klass is not None:
            parser.error("sample: --class needs a conditional run (ganfn train --conditional); this run is not")
        return None
    if args.klass is not None and not 0 <= args.klass < k:
        parser.error(f"sample: --class {args.klass} is out of range: this run has classes 0 to {k - 1}")
    return torch.full((n,), args.klass) if args.klass is not None else torch.arange(n) % k


def _sample(args: argparse.Namespace, parser: argparse.ArgumentParser, loaded: E.LoadedRun, state: Any) -> int:
    gan, out = loaded.gan, Path(args.out)
    for name in ("n", "batch_size", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"sample: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if len(loaded.sample_shape) != 3 or loaded.sample_shape[0] not in (1, 3):
        parser.error(f"sample: writes PNG images, but this run's samples have shape {loaded.sample_shape} "
                     "(1- or 3-channel images only)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"sample: --out {out} exists and is not an empty folder; choose a new one (nothing was written)")
    try:
        E.truncate(torch.zeros(()), args.truncation)
    except ValueError as e:
        parser.error(f"sample: --truncation: {e}")
    rng = torch.Generator().manual_seed(args.seed)
    if args.interpolate:
        a, b = gan.draw_latents(rng, args.n), gan.draw_latents(rng, args.n)
        z = E.slerp(a, b, torch.linspace(0, 1, args.steps)).flatten(0, 1)
        y = _labels(args, parser, gan.num_classes, args.n)
        y = None if y is None else y.repeat_interleave(args.steps)
    else:
        z, y = gan.draw_latents(rng, args.n), _labels(args, parser, gan.num_classes, args.n)
    z = E.truncate(z, args.truncation)
    out.mkdir(parents=True, exist_ok=True)
    images = _generate(loaded, state, z, y, args.batch_size, None if args.interpolate else out)
    if args.interpolate:
        grid = tb.image_grid(torch.cat(images), cols=args.steps, pad=1)
        tb.save_png(grid, out / "interpolation.png", scale=max(1, 64 // loaded.sample_shape[-1]))
        print(f"wrote {out / 'interpolation.png'}: {args.n} rows of {args.steps} images")
    else:
        print(f"wrote {args.n} PNGs of {loaded.sample_shape[-1]}x{loaded.sample_shape[-2]} pixels to {out} "
              f"(from {loaded.checkpoint.name}, step {loaded.step})")
    return 0


def _generate(loaded: E.LoadedRun, state: Any, z: torch.Tensor, y: torch.Tensor | None, batch: int,
              out: Path | None) -> list[torch.Tensor]:
    """Samples of ``z`` (classes ``y``) in batches with a progress bar; written as
    ``{i:06d}.png`` into ``out`` (and not kept), or returned when ``out`` is None."""
    kept, n = [], z.shape[0]
    width = max(6, len(str(n - 1)))
    device = loaded.state.step.device
    if loaded.cfg.standing_stats:  # once, not per batch: the same statistics gan.sample(standing=...) computes
        from .sampling import standing_stats

        buffers = standing_stats(loaded.gan, state, torch.Generator().manual_seed(0), batches=loaded.cfg.standing_stats)
        state = state._replace(g=state.g._replace(buffers=buffers))
    with torch.no_grad(), tqdm(total=n, unit="img", disable=not sys.stderr.isatty()) as bar:
        for start in range(0, n, batch):
            zz = z[start:start + batch].to(device)
            yy = None if y is None else y[start:start + batch].to(device)
            x = loaded.gan.sample(state, zz, yy).float().cpu()
            if out is None:
                kept.append(x)
            else:
                for i, arr in enumerate(E.to_uint8(x).numpy()):
                    Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(out / f"{start + i:0{width}d}.png")
            bar.update(x.shape[0])
    return kept

