"""ganfn.testing.strategies for conditional GANs: labels and labelled batches."""
from __future__ import annotations

import torch
from hypothesis import given

from ganfn.testing import strategies as gst


@given(gst.labelled_batches((1, 4, 4), 5, min_batch=2, max_batch=6, kind="image"))
def test_labelled_batches_are_valid_real_batches(pair):
    x, y = pair
    assert x.shape[1:] == (1, 4, 4) and y.shape == (x.shape[0],) and y.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) < 5 and x.abs().max() <= 1


@given(gst.class_labels(3, 7))
def test_class_labels_in_range(y):
    assert y.shape == (7,) and y.dtype == torch.int64 and set(y.tolist()) <= {0, 1, 2}
