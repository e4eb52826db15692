"""ganfn.allocator: glibc's settings for CPU training, and where they are applied."""
from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from ganfn import allocator, cli


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_glibc_takes_the_settings():
    assert allocator.tune_cpu_allocator() is True


def test_without_glibc_nothing_is_changed_and_false_comes_back(monkeypatch):
    def no_libc(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert allocator.tune_cpu_allocator() is False


def test_ganfn_train_tunes_the_allocator_on_the_cpu_only(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "tune_cpu_allocator", lambda: calls.append(1) or True)
    argv = ["train", "--data", "ring8", "--steps", "1", "--batch-size", "8", "--eval-every", "100", "--image-every",
            "100",
            "--log-every", "100", "--checkpoint-every", "0", "--no-progress", "--n-eval", "50", "--run-dir",
            str(tmp_path / "r")]
    assert cli.main(argv) == 0
    assert calls == [1]
    if not torch.cuda.is_available():  # --device cuda is refused here, before anything is tuned
        with pytest.raises(SystemExit):
            cli.main([*argv[:-1], str(tmp_path / "c"), "--device", "cuda"])
        assert calls == [1]
