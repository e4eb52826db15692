"""``ganfn eval``: the quality figures of a finished (or running) run's newest checkpoint."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from . import presets as P
from .evaluation import DEFAULT_EVAL_SAMPLES

__all__ = ["run_eval"]


def run_eval(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``ganfn eval RUN_DIR``: the quality figures of a run's newest checkpoint, one line per member."""
    from . import checkpoint, evaluation
    from .loop_actions import KID_NOTE

    run = Path(args.run_dir)
    if not run.is_dir():
        parser.error(f"eval: no such run directory: {run}")
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        parser.error(f"eval: {cfg_file} not found (was {run} written by ganfn train?)")
    cfg = P.saved(json.loads(cfg_file.read_text()), str(cfg_file))
    try:
        found = checkpoint.CheckpointManager(run / "checkpoints").load_latest(map_location=args.device)
        if found is None:  # a population split across ranks (--split members): its shards, joined
            from .distributed import shards

            found = shards.load_whole(run / "checkpoints", map_location=args.device)
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
                     "stacked_digits, fashion_mnist, cifar10 and image folders); pass --fid-weights FILE for FID")
    n_eval = args.n_eval or (evaluator.n_samples if evaluator else cfg.n_eval or DEFAULT_EVAL_SAMPLES)
    fid, fid_card = _fid_figures(args, data, parser, cfg) if args.fid_weights else (None, None)
    state = c["state"]
    stacked = state.step.dim() == 1
    y = gan.labels.rows(n_eval, args.device)  # conditional: every class equally often
    n = n_eval if y is None else len(y)
    z = gan.draw_latents(torch.Generator().manual_seed(4321), n).to(args.device)
    samples = evaluation.sample_members(gan, state, z, stacked, y, standing=cfg.standing_stats)
    print(f"{run} at step {c['step']} ({latest.name}), {n} samples per member:")
    for card in (evaluator.card if evaluator else None, fid_card):  # what each figure below depends on
        if card is not None:
            print(card._replace(n_generated=n).line())
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


def _fid_figures(args: argparse.Namespace, data: Any, parser: argparse.ArgumentParser,
                 cfg: P.Config) -> tuple[Any, Any]:
    """``samples -> {FID, KID, KID-std, n, n_ref}`` against the run's training data (or cached statistics),
    and the FID's protocol card."""
    from .atomic import sha256_file
    from .data import in_order
    from .metrics import ProtocolCard, feature_stats, inception_extractor, kernel_inception_distance
    from .metrics import fid_protocol as F

    try:
        ext = inception_extractor(args.fid_weights, device=args.device)
        ref = F.reference_stats(args.fid_ref_stats, lambda: in_order(data), ext)
        real_kid = ext(next(iter(in_order(data, 1000)))).features  # KID needs features: the first 1,000 images
    except (FileNotFoundError, ValueError, TypeError) as e:
        parser.error(f"eval: {e}")

    def figures(samples: torch.Tensor) -> dict[str, float | int | None]:
        feats = ext(samples).features
        out = F.fid(F.FIDStats(*feature_stats(feats), feats.shape[0]), ref, ext)
        kid, kid_std = kernel_inception_distance(feats, real_kid)
        return {**out, "KID": float(kid), "KID-std": float(kid_std), "n_ref_KID": real_kid.shape[0]}

    src = f"statistics file {args.fid_ref_stats}" if args.fid_ref_stats else _fid_reference(cfg, data)
    card = ProtocolCard("FID", f"Inception-v3 pool3 (2048 features) from {args.fid_weights}",
                        sha256_file(args.fid_weights),
                        "quantised to uint8 as a PNG; bilinear (no antialias) to 299x299, as pytorch-fid",
                        None, ref.n, src)
    return figures, card


def _fid_reference(cfg: P.Config, data: Any) -> str:
    """The FID card's words for a reference computed from the run's training data."""
    if cfg.data != "cifar10":
        return "the run's training data, every image once"
    from .data import cifar

    images = data[0] if isinstance(data, tuple) else data
    return (f"CIFAR-10 training split ({cifar.find_cifar10(cfg.data_root)}: data_batch_1..5, every image once, "
            f"{'x'.join(map(str, images.shape[1:]))} as trained); the papers' FIDs (R3GAN, StyleGAN2-ADA) use "
            "50,000 generated images against these 50,000 (--n-eval 50000)")
