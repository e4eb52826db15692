"""Quality evaluators for a run's config: the figure each data set is scored by
(mode coverage, FD-LeNet, stacked-digit modes, FD-RandConv), each with the
protocol card that determines it (:class:`ganfn.metrics.card.ProtocolCard`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import data as gdata
from .evaluation import DEFAULT_EVAL_SAMPLES, Evaluator
from .metrics.card import ProtocolCard, weights_hash
from .presets_folder import folder_evaluator, randconv_evaluator

if TYPE_CHECKING:
    from .presets import Config

__all__ = ["make_evaluator", "is_folder"]


def is_folder(cfg: Config) -> bool:
    """Whether ``cfg.data`` is a folder or zip archive of images (not a named data set)."""
    return cfg.data not in gdata.SAMPLERS and cfg.data not in gdata.NAMES


def make_evaluator(cfg: Config, n_samples: int | None = None, data: Any = None) -> Evaluator | None:
    """The quality figure for ``cfg.data``: mode coverage for ring8 / grid25,
    ``FD-LeNet(digits)`` (against the 397 held-out digits) for digits,
    ``FD-LeNet(fashion-mnist)`` (against the 10,000 test images) for
    fashion_mnist, ``FD-RandConv`` (random-feature Fréchet distance, not FID)
    against the CIFAR-10 test split for cifar10 and against the training images
    (:func:`ganfn.presets_folder.folder_evaluator`) for a folder when its
    training ``data`` is given; modes and reverse KL for stacked_digits; None otherwise.
    The image figures carry their :class:`ganfn.metrics.card.ProtocolCard`.
    Conditional runs add per-class figures and their ``fn`` takes ``(samples, labels)``:
    on digits the intra-class FD-LeNet and the LeNet's accuracy on the requested
    classes; on the mixtures the fraction of class-k samples nearest mode k."""
    from . import metrics

    n = n_samples or cfg.n_eval or DEFAULT_EVAL_SAMPLES
    if cfg.data in ("ring8", "grid25"):
        centers = gdata.ring8_centers() if cfg.data == "ring8" else gdata.grid25_centers()
        std = gdata.RING8_STD if cfg.data == "ring8" else gdata.GRID25_STD

        def modes(samples: Tensor, labels: Tensor | None = None) -> dict[str, float]:
            mc = metrics.mode_coverage(samples.double(), centers.double(), std)
            out = {"modes": float(mc.modes), "high_quality": float(mc.high_quality), "kl": float(mc.kl)}
            if labels is not None:
                nearest = torch.cdist(samples.double(), centers.double()).argmin(1)
                out["on_class_mode"] = float((nearest == labels).double().mean())
            return out

        return Evaluator(modes, "modes", higher_is_better=True, n_samples=n, reference=centers)
    if cfg.data == "digits":
        ext = metrics.lenet_extractor("digits")
        test_x, test_y = gdata.digits("test", 8, labels=True)
        real = ext(test_x)

        def fd(samples: Tensor, labels: Tensor | None = None) -> dict[str, float]:
            out = metrics.evaluate_images(samples, real, ext, kid_subsets=20,
                                          kid_subset_size=min(300, samples.shape[0]),
                                          generator=torch.Generator().manual_seed(0))
            if labels is not None:
                out.update(metrics.evaluate_conditional_images(samples, labels, real, test_y, ext))
            return {k: float(v) for k, v in out.items()}

        return Evaluator(fd, "FD-LeNet(digits)", higher_is_better=False, n_samples=n,
                         card=_lenet_card(ext, n, len(test_y), "scikit-learn digits, test split: 397 held-out images "
                                                               "(ganfn.data.digits_split, randperm seed 0)"))
    if cfg.data == "stacked_digits":
        return _stacked_digits_evaluator(n_samples or cfg.n_eval)
    if cfg.data == "fashion_mnist":
        root = cfg.data_root or gdata.roots.fashion_mnist_root()
        ext = metrics.lenet_extractor("fashion-mnist", root=root)
        ref = metrics.fid_stats(gdata.fashion_mnist(root, "test"), ext)  # the 10,000 test images

        def fd_fashion(samples: Tensor, labels: Tensor | None = None) -> dict[str, float]:  # no per-class figures yet
            out = metrics.fid(samples, ref, ext)
            return {out_key: float(v) for out_key, v in out.items() if v is not None}

        return Evaluator(fd_fashion, "FD-LeNet(fashion-mnist)", higher_is_better=False, n_samples=n,
                         card=_lenet_card(ext, n, ref.n, f"Fashion-MNIST test split from {root}"))
    if cfg.data == "cifar10":
        return _cifar10_evaluator(cfg.data_root, n)
    if is_folder(cfg) and data is not None:
        return folder_evaluator(data, n, str(Path(cfg.data).expanduser()), cfg.data_workers)
    return None


def _lenet_card(ext: Any, n: int, n_ref: int | None, reference: str) -> ProtocolCard:
    return ProtocolCard(f"FD-{ext.name}", f"{ext.name} trained by ganfn (ganfn.metrics.lenet), penultimate layer "
                        f"({ext.params['fc1.weight'].shape[0]} features)", weights_hash(ext.params),
                        f"luma grey; bilinear (antialiased when shrinking) to {ext.image_size}x{ext.image_size}",
                        n, n_ref, reference)


def _stacked_digits_evaluator(n: int | None) -> Evaluator:
    """Modes covered (of 1,000) and reverse KL to uniform on stacked digits,
    on 26,000 samples (the StackedMNIST protocol) unless ``n`` is given."""
    from . import metrics
    from .metrics.stacked_modes import STACKED_EVAL_SAMPLES, stacked_digit_modes

    ext = metrics.lenet_extractor("digits")
    n = n or STACKED_EVAL_SAMPLES

    def probs(x: Tensor) -> Tensor:
        out = ext(x).probs
        assert out is not None  # the LeNet extractor is a classifier: it always gives class probabilities
        return out

    def modes(samples: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        return stacked_digit_modes(samples, probs)

    card = ProtocolCard(
        "modes", f"{ext.name} trained by ganfn (ganfn.metrics.lenet): each channel's argmax class gives one digit "
        "of the mode 100 d0 + 10 d1 + d2", weights_hash(ext.params),
        f"each channel as a grey image; bilinear (antialiased when shrinking) to {ext.image_size}x{ext.image_size}",
        n, 0, f"no real images: the uniform distribution over the 1,000 modes (modes covered, reverse KL in nats, "
        f"as StackedMNIST is scored); at {n} samples a perfect generator's KL is about {999 / (2 * n):.3g} "
        "(finite-sample bias)")
    return Evaluator(modes, "modes", higher_is_better=True, n_samples=n, card=card, ties=("kl",))


def _cifar10_evaluator(root: str | None, n: int) -> Evaluator:
    """``FD-RandConv`` against the CIFAR-10 test split: the offline figure (no Inception
    weights needed). It is not FID; ``ganfn eval --fid-weights`` gives FID."""
    from .data import cifar

    where = cifar.find_cifar10(root)
    return randconv_evaluator(
        cifar.cifar10_uint8(where, "test")[0], n,
        f"CIFAR-10 test split ({{m}} images, test_batch of {where}, 32x32); NOT FID and not comparable to published "
        "CIFAR-10 FIDs (ganfn eval --fid-weights gives FID)", str(where))
