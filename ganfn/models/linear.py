"""A linear layer whose bias rides in the matrix product when its input is narrow.

Under ``torch.func.vmap`` with per-member weights, ``F.linear`` becomes a
batched matrix product followed by a separate bias add over the whole
``[S, B, out]`` output. When the layer widens its input several times (a 2-D
point or an 8-D latent into 128 hidden units) that add, and the bias
gradient's sum over the same output, are full passes over the largest tensors
of the step, which on the CPU no longer fit in cache. Appending a column of
ones to the input and the bias as one more weight column gives the same layer
as one product: the bias costs a copy of the narrow input instead of a pass
over the wide output. Measured on the ring8 mixture GAN at 16 members: the
vmapped step 17.2 -> 14.9 ms (``bench/README_vmap.md``).

Outside ``vmap`` the layer is ``F.linear`` exactly: there ``addmm`` already
adds the bias inside the product, and the extra copies made a single run of
the same GAN 13% slower. A vmapped member therefore matches its single run to
round-off, as it already did for these shapes with ``nn.Linear``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NARROW_RATIO", "Linear", "bias_column_linear"]

# A layer whose output is at least this many times wider than its input
# carries its bias in the product. The column form copies the input to save a
# pass over the output, so it pays when the output is much the wider; 4 is a
# judgement, not a measurement: only ring8's ratios (16 and 64) were timed.
NARROW_RATIO = 4


def bias_column_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``x @ weight.T + bias`` as one product, ``[x, 1] @ [weight, bias].T``.

    ``x`` [..., in], ``weight`` [out, in], ``bias`` [out] -> [..., out]; equal
    to ``F.linear(x, weight, bias)`` to round-off (the bias joins the product's
    sum instead of being added after it).
    """
    return F.linear(F.pad(x, (0, 1), value=1.0), torch.cat([weight, bias.unsqueeze(-1)], -1))


def _under_vmap() -> bool:
    # Eager vmap only: torch.compile fuses the bias add into its own kernels.
    if torch.compiler.is_compiling():
        return False
    stack = _interpreters()
    return any(i.key() == _VMAP for i in stack or ())


_interpreters = getattr(torch._C._functorch, "get_interpreter_stack", lambda: None)
_VMAP = getattr(getattr(torch._C._functorch, "TransformType", None), "Vmap", None)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, ``state_dict`` and initialisation) that,
    under eager ``torch.func.vmap`` and when ``out_features >= NARROW_RATIO *
    in_features``, computes :func:`bias_column_linear`; otherwise exactly
    ``F.linear``. Why: see the module docstring."""

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None or self.out_features < NARROW_RATIO * self.in_features or not _under_vmap():
            return F.linear(x, self.weight, self.bias)
        return bias_column_linear(x, self.weight, self.bias)
