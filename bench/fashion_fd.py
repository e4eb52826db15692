"""FD-LeNet(fashion-mnist) on Debian's Fashion-MNIST files: what the figure reads for
real images, for noise, and the classifier's held-out accuracy.

    python bench/fashion_fd.py

Needs ``apt install dataset-fashion-mnist``. The LeNet is trained once on the
60,000 training images (3 epochs, seed 0) and cached with a checksum under
$GANFN_CACHE or ~/.cache/ganfn; the reference is the 10,000 test images.
"""
from __future__ import annotations

import time

import torch

from ganfn import data, metrics
from ganfn.metrics.lenet import accuracy


def main() -> None:
    torch.set_num_threads(1)
    t = time.perf_counter()
    ext = metrics.lenet_extractor("fashion-mnist")
    print(f"LeNet(fashion-mnist) ready in {time.perf_counter() - t:.0f} s")
    test_x, test_y = data.fashion_mnist(split="test", labels=True)
    train_x, train_y = data.fashion_mnist(split="train", labels=True)
    print(f"held-out accuracy: {accuracy(ext.params, test_x, test_y):.4f}")
    ref = metrics.fid_stats(test_x, ext)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (1_000, 10_000):
        real = train_x[torch.randperm(train_x.shape[0], generator=g)[:n]]
        rows.append(("training images (real)", metrics.fid(real, ref, ext)))
        noise = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
        rows.append(("uniform noise", metrics.fid(noise, ref, ext)))
        one_class = train_x[train_y == 0][:n]
        rows.append(("one class only (T-shirts: mode collapse)", metrics.fid(one_class, ref, ext)))
    print("| images | n | n_ref | FD-LeNet(fashion-mnist) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['n']} | {r['n_ref']} | {r['FD-LeNet(fashion-mnist)']:.3f} |")


if __name__ == "__main__":
    main()
