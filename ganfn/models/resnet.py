"""ResNet generator and discriminator: the SNGAN CIFAR-10 baseline shape.

The layout of Miyato et al. (2018, Table 4) and Miyato & Koyama (2018), as
Mimicry's ``sngan_32`` reproduces it:

- G: z -> linear -> 4x4 map -> ``n`` up-blocks (BN-ReLU-upsample-conv3x3-BN-ReLU-
  conv3x3, with a 1x1-conv shortcut of the upsampled input) -> BN-ReLU-conv3x3-tanh.
- D: an "optimised" first block (conv-ReLU-conv-avgpool, shortcut avgpool-conv1x1)
  -> down-blocks (ReLU-conv-ReLU-conv-avgpool, shortcut conv1x1-avgpool) to
  size/4 -> two blocks at that size -> ReLU -> sum over space -> linear.

At 32x32 that is 3 up-blocks and 1 + 1 + 2 D blocks ending at 8x8, as in the paper. With
``num_classes`` set, G's batch norms become conditional batch norms and D adds
the projection term ``<embed(y), phi(x)>`` (Miyato & Koyama 2018); both then take
labels: ``G(z, y)``, ``D(x, y)``. The discriminator is meant for spectral
normalisation (``wants_spectral_norm``) and has no normalisation layers.

Sizes are modest by default (G width 128, D width 128; the paper's CIFAR
models use 256 and 128) so that a CPU can run them; ``width`` scales them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import ConditionalBatchNorm2d, check_labels_arg, n_doublings
from .linear import Linear

__all__ = ["ResNetGenerator", "ResNetDiscriminator", "resnet_init"]


@torch.no_grad()
def resnet_init(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Glorot (Xavier) uniform weights, zero biases, as the SNGAN code initialises
    its ResNets; batch-norm scales 1 and shifts 0 (per class when conditional).
    In place, drawing only from ``generator``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            bias = getattr(m, "bias", None)
            if bias is not None:
                nn.init.zeros_(bias)
        elif isinstance(m, (nn.BatchNorm2d, ConditionalBatchNorm2d)):
            m.reset_parameters()
    return module


class _Norm(nn.Module):
    """BatchNorm2d, or a conditional batch norm when ``num_classes`` is set;
    ``forward(x, y)`` ignores ``y`` in the unconditional case."""

    def __init__(self, channels: int, num_classes: int | None) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels) if num_classes is None else ConditionalBatchNorm2d(channels, num_classes)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.norm(x) if y is None else self.norm(x, y)


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int | None) -> None:
        super().__init__()
        self.n1, self.n2 = _Norm(c_in, num_classes), _Norm(c_out, num_classes)
        # No biases: c1 feeds a batch norm, and c2 + skip feed the next block's
        # batch norm and (through linear shortcuts only) the output batch norm,
        # which subtracts any per-channel constant. Their true gradient is zero,
        # and Adam would turn its round-off into full-size steps.
        self.c1, self.c2 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False)

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        h = F.interpolate(torch.relu(self.n1(x, y)), scale_factor=2, mode="nearest")
        h = self.c2(torch.relu(self.n2(self.c1(h), y)))
        return h + self.skip(up)


class _DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, first: bool) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.c1, self.c2 = nn.Conv2d(c_in, c_out, 3, 1, 1), nn.Conv2d(c_out, c_out, 3, 1, 1)
        # A learnable shortcut wherever the shape changes (as in the SNGAN code).
        self.skip = nn.Conv2d(c_in, c_out, 1, 1, 0) if (down or c_in != c_out) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else torch.relu(x)  # the optimised first block starts with a conv
        h = self.c2(torch.relu(self.c1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.skip is not None:
            # First block: pool then conv (cheaper, as SNGAN's OptimizedBlock); later ones: conv then pool.
            s = self.skip(F.avg_pool2d(s, 2)) if (self.first and self.down) else self.skip(s)
            if self.down and not self.first:
                s = F.avg_pool2d(s, 2)
        return h + s


class ResNetGenerator(nn.Module):
    """SNGAN ResNet generator: (z [B, latent_dim] (, y [B])) -> images [B, channels, size, size].

    ``size`` is a power of two >= 8 (32 is the CIFAR baseline: 3 up-blocks);
    ``num_classes`` makes it conditional (conditional batch norm).
    Initialised by :func:`resnet_init` from ``generator``.

    Only the output conv has a bias: every other layer feeds a batch norm,
    directly or through linear shortcuts, so a bias there would have a true
    gradient of zero (Adam then steps on its round-off, and vmapped members
    drift from their single runs; see :func:`ganfn.testing.drift.member_drift`).
    """

    def __init__(
        self,
        latent_dim: int = 128,
        size: int = 32,
        channels: int = 3,
        width: int = 128,
        num_classes: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = n_doublings(size)
        self.latent_dim, self.num_classes, self.width = int(latent_dim), num_classes, width
        self.sample_shape = (channels, size, size)
        self.linear = Linear(latent_dim, 16 * width, bias=False)  # feeds batch norms only (see _UpBlock)
        self.blocks = nn.ModuleList([_UpBlock(width, width, num_classes) for _ in range(n)])
        self.out_norm = nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, channels, 3, 1, 1)
        resnet_init(self, generator)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.num_classes is not None:
            check_labels_arg(y, z.shape[0], self.num_classes)
        h = self.linear(z.reshape(z.shape[0], -1)).reshape(z.shape[0], self.width, 4, 4)
        for block in self.blocks:
            h = block(h, y if self.num_classes is not None else None)
        return torch.tanh(self.out(torch.relu(self.out_norm(h))))


class ResNetDiscriminator(nn.Module):
    """SNGAN ResNet discriminator: (images [B, channels, size, size] (, y [B])) -> logits [B].

    With ``num_classes`` the projection term ``<embed(y), phi(x)>`` is added
    (Miyato & Koyama 2018). No normalisation layers; ``wants_spectral_norm``.
    """

    wants_spectral_norm = True

    def __init__(
        self,
        size: int = 32,
        channels: int = 3,
        width: int = 128,
        num_classes: int | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = n_doublings(size)
        self.sample_shape, self.num_classes = (channels, size, size), num_classes
        # Down to 8x8 at size 32 (SNGAN), to 4x4 at size 8: max(1, n - 1) halvings.
        blocks = [_DownBlock(channels, width, down=True, first=True)]
        blocks += [_DownBlock(width, width, down=True, first=False) for _ in range(max(n - 2, 0))]
        blocks += [_DownBlock(width, width, down=False, first=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.head = Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width) if num_classes is not None else None
        resnet_init(self, generator)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = torch.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling, as in SNGAN
        out = self.head(h).reshape(x.shape[0])
        if self.embed is None:
            return out
        check_labels_arg(y, x.shape[0], self.num_classes)
        return out + (self.embed(y).to(h.dtype) * h).sum(1)
