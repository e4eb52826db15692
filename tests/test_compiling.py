"""ganfn.compiling: a compiled step on a CPU machine prints no "No CUDA runtime is found" line."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganfn import compiling

ROOT = Path(__file__).resolve().parents[1]
STEP = """
import torch
torch.set_num_threads(1)
import ganfn
from ganfn import data, ensemble, models
G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
gan = ganfn.GAN(G, D, latent_dim=latent)
step = ensemble.make_step(gan, compile=True)
noise = ensemble.draw_noise_many(gan, ensemble.rngs([0, 1], "cpu"), 8)
state, metrics = step(ensemble.init_many(gan, [0, 1]), data.ring8(8, torch.Generator().manual_seed(0)), noise)
print("stepped", tuple(metrics["d_loss"].shape))
"""


def _stderr(code: str, tmp_path: Path) -> tuple[str, str]:
    # A CUDA toolkit in sight (CUDA_HOME names a folder) and no CUDA runtime: the condition of the line,
    # on any machine (the CUDA build of torch on a CPU box is one such).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_HOME": str(tmp_path),
           "CUDA_VISIBLE_DEVICES": "", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def test_the_environment_makes_torch_print_the_line(tmp_path):
    # The control: without ganfn's filter, torch prints it as soon as inductor imports cpp_extension.
    assert compiling.NO_CUDA_NOTE in _stderr("import torch.utils.cpp_extension", tmp_path)[1]


@pytest.mark.slow
def test_a_compiled_step_on_cpu_prints_no_cuda_note(tmp_path):
    out, err = _stderr(STEP, tmp_path)
    assert "stepped (2,)" in out and compiling.NO_CUDA_NOTE not in err, err


def test_only_that_message_is_dropped():
    logger = logging.getLogger("torch.utils.cpp_extension")
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        compiling.quiet_cuda_probe()
        n = len(logger.filters)
        compiling.quiet_cuda_probe()  # once is enough, twice changes nothing
        assert n == len(logger.filters) >= 1
        logger.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        logger.warning("Error building extension '%s'", "x")
        assert [r.getMessage() for r in seen] == ["Error building extension 'x'"]
    finally:
        logger.removeHandler(handler)
