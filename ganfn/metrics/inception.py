"""Inception-v3 feature extractor for FID / KID / IS, from a weights file the
user supplies. ganfn never downloads anything.

Where to get a weights file (text only; fetch it yourself, then pass its path):
- pytorch-fid's FID network, ``pt_inception-2015-12-05-6726825d.pth``, from
  the pytorch-fid GitHub releases: the TensorFlow FID graph converted to a
  PyTorch state_dict (1008 classes, no auxiliary head). This is the one whose
  figures are comparable with published FIDs.
- torchvision's ``inception_v3_google-0cc3c7bd.pth`` (what
  ``torchvision.models.Inception_V3_Weights.IMAGENET1K_V1`` downloads; 1000
  classes, with an auxiliary head that we load and ignore). FIDs computed with
  it are *not* comparable with published numbers, only with each other.
- Either file re-saved with ``safetensors`` (``.safetensors``) if that package
  is installed.
In torch.hub file names the 8 hex digits before ``.pth`` are the start of the
file's SHA-256; pass them (or the full digest) as ``sha256=`` to have the file
checked before it is read.

Configuration: torchvision's ``inception_v3`` architecture built with
``weights=None, init_weights=False, transform_input=False`` (the weights are
overwritten anyway; skipping the init keeps construction fast); the number of
classes and the auxiliary head are inferred from the state dict. With the
1008-class FID weights the pooling in the Mixed_5*/6*/7* blocks is switched to
the FID network's (average pools that exclude padding, a max pool in the last
block), as pytorch-fid does; ``fid_variant`` overrides the automatic choice.
Inputs follow pytorch-fid's protocol exactly, so that with its weights file
the figures are comparable with published ones: images [N, C, H, W] as uint8
(what a PNG holds) or as floats in [-1, 1], which are first quantised to uint8
exactly as ``torchvision.utils.save_image`` does when writing a PNG
(:func:`quantize`); then ``uint8 / 255`` (``ToTensor``), 1 channel repeated to
3 (``convert("RGB")``), a bilinear resize to 299x299 (``align_corners=False``,
no antialiasing) and ``2 x - 1``. Features: pool3, [N, 2048]; probabilities:
softmax of the logits, [N, K].
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganfn.atomic import sha256_file

from .extractor import Features

__all__ = ["InceptionExtractor", "inception_extractor", "load_inception_state_dict", "WeightsChecksumError", "quantize"]


class WeightsChecksumError(ValueError):
    """The weights file's SHA-256 does not match the one given."""


def load_inception_state_dict(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Tensor]:
    """Read a state dict without executing code from the file.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``. ``sha256``: full hex digest or a prefix
    of at least 8 hex digits (torch.hub style), checked before loading.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights not found at {path}. ganfn does not download them; "
            "see the ganfn.metrics.inception docstring for where to get the file."
        )
    if sha256 is not None:
        want = sha256.lower().strip()
        if len(want) < 8 or any(c not in "0123456789abcdef" for c in want):
            raise ValueError(f"sha256 must be a hex digest or a prefix of >= 8 hex digits, got {sha256!r}")
        got = sha256_file(path)
        if not got.startswith(want):
            raise WeightsChecksumError(f"{path}: SHA-256 is {got}, expected {want}; wrong or corrupted weights file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("reading .safetensors needs the 'safetensors' package") from e
        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "fc.weight" not in sd:
        raise ValueError(f"{path} does not hold an Inception-v3 state_dict (no 'fc.weight' entry)")
    # Checkpoints saved from DataParallel/DDP prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in sd.items()}


# --- FID-network pooling (pytorch-fid's FIDInception* blocks), as _forward replacements.
def _fid_a(self, x: Tensor) -> list[Tensor]:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
    return [self.branch1x1(x), b5, b3, bp]


def _fid_c(self, x: Tensor) -> list[Tensor]:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    bd = self.branch7x7dbl_1(x)
    for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
        bd = m(bd)
    bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
    return [self.branch1x1(x), b7, bd, bp]


def _fid_e(pool):
    def forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        return [self.branch1x1(x), b3, bd, self.branch_pool(pool(x))]

    return forward


def _use_fid_pooling(net: nn.Module) -> None:
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        m = getattr(net, name)
        m._forward = types.MethodType(_fid_a, m)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        m = getattr(net, name)
        m._forward = types.MethodType(_fid_c, m)
    avg = lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    mx = lambda x: F.max_pool2d(x, 3, stride=1, padding=1)
    for name, pool in (("Mixed_7b", avg), ("Mixed_7c", mx)):
        m = getattr(net, name)
        m._forward = types.MethodType(_fid_e(pool), m)


def quantize(images: Tensor) -> Tensor:
    """Images [N, C, H, W] in [-1, 1] -> uint8, as when saved to PNG.

    The rule of ``torchvision.utils.save_image``: ``x01 = (x + 1) / 2``, then
    ``(255 x01 + 0.5)`` clamped to [0, 255] and truncated (round half up).
    uint8 input is returned unchanged. Published FIDs are computed on PNG
    files, so generated floats must go through this step to be comparable.
    """
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [-1, 1], got {images.dtype}")
    x01 = (images.detach().float() + 1.0) / 2.0
    return x01.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def fid_inputs(images: Tensor) -> Tensor:
    """pytorch-fid's network input for uint8 or [-1, 1] images [N, C, H, W] -> float32 [N, 3, 299, 299]."""
    x = quantize(images).float().div(255)  # ToTensor on the PNG's bytes
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # PIL convert("RGB") repeats the grey channel
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


class InceptionExtractor:
    """images [N, C, H, W] (uint8, or float in [-1, 1]) -> Features(pool3 [N, 2048], probs [N, K])."""

    kind = "inception"
    name = "Inception"

    def __init__(self, net: nn.Module, fc: nn.Linear, device: torch.device | str = "cpu", batch_size: int = 64):
        self.net, self.fc, self.device, self.batch_size = net, fc, torch.device(device), batch_size

    def __call__(self, images: Tensor) -> Features:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [N, 1 or 3, H, W], got {tuple(images.shape)}")
        feats, probs = [], []
        with torch.no_grad():
            for chunk in torch.split(images, self.batch_size):
                x = fid_inputs(chunk.to(self.device))
                pool3 = self.net(x)  # fc replaced by Identity: the forward ends at pool3
                feats.append(pool3.cpu())
                probs.append(self.fc(pool3).softmax(1).cpu())
        return Features(torch.cat(feats), torch.cat(probs))


def inception_extractor(
    weights: str | os.PathLike,
    *,
    sha256: str | None = None,
    fid_variant: bool | None = None,
    strict: bool = True,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> InceptionExtractor:
    """Build the Inception-v3 extractor from a user-supplied weights file.

    weights: path to a state_dict (.pth/.pt via torch.load(weights_only=True),
    or .safetensors). sha256: expected digest or >= 8-hex-digit prefix.
    fid_variant: FID-network pooling; default on iff the file has 1008 classes.
    strict: passed to load_state_dict (missing/unexpected keys are errors).
    """
    from torchvision.models import inception_v3

    sd = load_inception_state_dict(weights, sha256)
    num_classes = sd["fc.weight"].shape[0]
    aux = any(k.startswith("AuxLogits.") for k in sd)
    net = inception_v3(
        weights=None, aux_logits=aux, init_weights=False, transform_input=False, num_classes=num_classes
    )
    result = net.load_state_dict(sd, strict=strict)
    if not strict and (result.missing_keys or result.unexpected_keys):
        import warnings

        warnings.warn(
            f"Inception weights: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (strict=False)",
            stacklevel=2,
        )
    if fid_variant is None:
        fid_variant = num_classes == 1008
    if fid_variant:
        _use_fid_pooling(net)
    fc = net.fc
    net.fc = nn.Identity()
    net.eval().to(device)
    fc.eval().to(device)
    return InceptionExtractor(net, fc, device=device, batch_size=batch_size)
