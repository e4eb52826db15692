"""ganfn.metrics: offline quality figures for GAN runs.

Feature-matrix metrics (inputs [N, d], float64 inside, tensors out):
``frechet_distance``, ``kernel_inception_distance``, ``precision_recall``;
``inception_score`` on class probabilities [N, K]; ``mode_coverage`` for
2-D Gaussian mixtures. Extractors turn images into features:
``lenet_extractor`` (trained by ganfn on scikit-learn digits, cached) and
``inception_extractor`` (user-supplied weights file, never downloaded),
``random_conv_extractor`` (fixed random weights: ``FD-RandConv`` for any
image folder). ``ProtocolCard``: what a score depends on (extractor, weights
hash, resize, image counts, reference).
``fid`` / ``fid_stats`` / ``save_stats`` / ``load_stats``: FID with
pytorch-fid's protocol and its ``.npz`` reference statistics.
``evaluate_images`` / ``evaluate_stacked_images`` put them together with
honest names (``FD-LeNet(digits)``; ``FID`` only for Inception features).
Conditional generators: ``intra_class_frechet_distance`` and ``class_accuracy``
(``evaluate_conditional_images``, ``evaluate_stacked_conditional_images``).
"""

from .card import ProtocolCard, weights_hash
from .conditional import (
    class_accuracy,
    conditional_names,
    evaluate_conditional_images,
    evaluate_stacked_conditional_images,
    intra_class_frechet_distance,
)
from .evaluate import evaluate_features, evaluate_images
from .extractor import Extractor, Features, FunctionExtractor, metric_names
from .fid_protocol import FIDStats, fid, fid_stats, load_stats, save_stats
from .frechet import feature_stats, frechet_distance, frechet_distance_from_stats
from .inception import InceptionExtractor, WeightsChecksumError, inception_extractor, quantize
from .inception_score import inception_score
from .kid import kernel_inception_distance
from .lenet import CacheChecksumError, LeNetExtractor, digits_labelled, lenet_extractor
from .modes import (
    GRID25_CENTERS,
    GRID25_STD,
    RING8_CENTERS,
    RING8_STD,
    ModeCoverage,
    grid25_centers,
    mode_coverage,
    ring8_centers,
)
from .precision_recall import precision_recall
from .random_features import RandomConvExtractor, random_conv_extractor
from .stacked import (
    evaluate_stacked_images,
    stacked_frechet_distance,
    stacked_kernel_inception_distance,
    stacked_mode_coverage,
)

__all__ = [
    "ProtocolCard",
    "weights_hash",
    "RandomConvExtractor",
    "random_conv_extractor",
    "intra_class_frechet_distance",
    "class_accuracy",
    "conditional_names",
    "evaluate_conditional_images",
    "evaluate_stacked_conditional_images",
    "frechet_distance",
    "frechet_distance_from_stats",
    "feature_stats",
    "fid",
    "fid_stats",
    "FIDStats",
    "load_stats",
    "save_stats",
    "kernel_inception_distance",
    "inception_score",
    "precision_recall",
    "mode_coverage",
    "ModeCoverage",
    "ring8_centers",
    "grid25_centers",
    "RING8_CENTERS",
    "RING8_STD",
    "GRID25_CENTERS",
    "GRID25_STD",
    "Features",
    "Extractor",
    "FunctionExtractor",
    "metric_names",
    "lenet_extractor",
    "LeNetExtractor",
    "digits_labelled",
    "CacheChecksumError",
    "inception_extractor",
    "InceptionExtractor",
    "quantize",
    "WeightsChecksumError",
    "evaluate_features",
    "evaluate_images",
    "evaluate_stacked_images",
    "stacked_frechet_distance",
    "stacked_kernel_inception_distance",
    "stacked_mode_coverage",
]
