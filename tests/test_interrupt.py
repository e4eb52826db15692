"""SIGINT / SIGTERM end a run after the current step with its files written; --resume continues bit-identically."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn
from ganfn import checkpoint, cli, data, models
from ganfn.interrupt import EXIT_STATUS, deferred_signals
from ganfn.loop import Evaluator, fit
from ganfn.tree import leaves

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("wall_time_s", "steps_per_s", "steps_run", "first_step_s")


def _same(a, b) -> bool:
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


# ------------------------------------------------------------------ the handlers, in this process


def test_the_first_signal_is_noted_a_second_raises_and_the_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with deferred_signals() as stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs the handler between bytecodes
        assert stop() == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        assert stop() == "SIGTERM"  # the first one is what stopped the run
    assert {s: signal.getsignal(s) for s in before} == before
    with pytest.raises(KeyboardInterrupt):  # outside, Python's own Ctrl-C is back
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)


def test_a_handler_python_did_not_set_is_restored_as_the_default(monkeypatch):
    calls = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal",
                        lambda s, h: calls.append((s, h)) or (None if len(calls) <= 2 else real(s, h)))
    with deferred_signals():
        pass
    assert calls[2:] == [(signal.SIGINT, signal.SIG_DFL), (signal.SIGTERM, signal.SIG_DFL)]


# ------------------------------------------------------------------ fit(stop=...), in this process


def _ring_gan():
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    return ganfn.GAN(G, D, latent_dim=latent, parts=[ganfn.parts.ema(0.9)])


def _stop_after(calls: int):
    count = [0]

    def stop():
        count[0] += 1
        return "test" if count[0] > calls else None

    return stop


@settings(max_examples=4)
@given(at=st.integers(0, 6), stacked=st.booleans())
def test_fit_stopped_at_any_step_writes_its_files_and_resumes_bit_identically(tmp_path_factory, at, stacked):
    tmp = tmp_path_factory.mktemp("stop")
    gan = _ring_gan()
    kw = dict(steps=7, batch_size=16, log_every=1, eval_every=3, progress=False, print_fn=lambda s: None,
              evaluator=Evaluator(lambda s: {"m": float(s.mean())}, "m", n_samples=16))
    kw.update(seeds=[1, 2], hparams=[{"lr_d": 1e-3}, {"lr_d": 3e-4}]) if stacked else kw.update(seed=1)
    full, h_full = fit(gan, data.ring8, run_dir=tmp / "full", **kw)
    part, h_part = fit(gan, data.ring8, run_dir=tmp / "cut", stop=_stop_after(at), **kw)
    assert h_part["interrupted"] == {"by": "test", "step": at}
    assert h_part["stopped"] == f"interrupted (test) at step {at}"
    assert checkpoint.CheckpointManager(tmp / "cut" / "checkpoints").latest().name == f"ckpt-{at:08d}.pt"
    assert all((tmp / "cut" / f).is_file() for f in ("samples.png", "losses.png", "metrics.json"))
    assert json.loads((tmp / "cut" / "metrics.json").read_text())["interrupted"]["step"] == at
    resumed, h_res = fit(gan, data.ring8, run_dir=tmp / "cut", resume=True, **kw)
    assert _same(full, resumed)
    assert {k: v for k, v in h_res.items() if k not in TIMINGS} == {k: v for k, v in h_full.items() if k not in TIMINGS}
    assert at == 0 or not _same(full, part)  # the comparison can fail


@pytest.mark.parametrize("at", [3, 4])
def test_a_population_run_stopped_at_or_before_a_round_resumes_bit_identically(tmp_path, at):
    # Step 4 has a PBT round and a halving: the stop comes after them, so the checkpoint holds their result.
    from ganfn.lineage import Schedule
    from ganfn.population import Metric

    def schedule():
        return Schedule({"lr_d": (1e-4, 1e-2), "lr_g": (1e-4, 1e-2)}, every=2, fraction=0.25, halving_at=[4],
                        metrics=(Metric("m", True),), seed=1)

    kw = dict(steps=6, batch_size=16, eval_every=2, log_every=2, seeds=list(range(4)), progress=False,
              print_fn=lambda s: None, hparams=[{"lr_d": 1e-3 * (1 + i), "lr_g": 1e-3} for i in range(4)],
              evaluator=Evaluator(lambda s: {"m": float(s.std())}, "m", higher_is_better=True, n_samples=32))
    full, h_full = fit(_ring_gan(), data.ring8, population=schedule(), run_dir=tmp_path / "full", **kw)
    fit(_ring_gan(), data.ring8, population=schedule(), run_dir=tmp_path / "cut", stop=_stop_after(at), **kw)
    resumed, h_res = fit(_ring_gan(), data.ring8, population=schedule(), run_dir=tmp_path / "cut", resume=True, **kw)
    assert _same(full, resumed) and h_res["population"] == h_full["population"]
    assert any(e["kind"] == "copy" for e in h_full["population"]["events"])


# ------------------------------------------------------------------ the command line, a real process


def _start(argv, run_dir: Path, preexec=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ganfn", *argv, "--run-dir", str(run_dir)], cwd=run_dir.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def _interrupt_when_training(proc: subprocess.Popen, run_dir: Path, sig: int) -> tuple[str, str]:
    """Send ``sig`` once the run has written a checkpoint (it is training); return its output."""
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt-*.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=120)
    finally:
        proc.kill()


def _check_interrupted(proc, out: str, err: str, run_dir: Path, prog: str, name: str) -> int:
    """The exit status, the one line, the files; returns the step the run stopped at."""
    assert proc.returncode == EXIT_STATUS, (out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    lines = [line for line in out.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: interrupted by {name} at step "), out
    assert lines[0].endswith(f"continue with: {prog} --resume {run_dir}") and "final:" not in out
    step = int(lines[0].split(" at step ")[1].split()[0])
    assert checkpoint.CheckpointManager(run_dir / "checkpoints").latest().name == f"ckpt-{step:08d}.pt"
    for f in ("samples.png", "losses.png", "metrics.json"):
        assert (run_dir / f).is_file(), f
    return step


def _final(run_dir: Path) -> tuple[object, dict]:
    c = checkpoint.load(checkpoint.CheckpointManager(run_dir / "checkpoints").latest())
    m = json.loads((run_dir / "metrics.json").read_text())
    m["config"].pop("run_dir")
    return c["state"], {k: v for k, v in m.items() if k not in TIMINGS}


RING = ["--data", "ring8", "--batch-size", "16", "--checkpoint-every", "5", "--log-every", "1", "--eval-every", "5",
        "--n-eval", "100", "--no-progress"]


@pytest.mark.slow
@pytest.mark.parametrize("command, sig, extra", [("train", signal.SIGINT, []),
                                                 ("sweep", signal.SIGTERM, ["--grid", "lr_d=1e-3,3e-4"])])
def test_a_signalled_run_keeps_its_work_and_resumes_bit_identically(tmp_path, capsys, command, sig, extra):
    cut = tmp_path / "cut"
    cut.mkdir()
    proc = _start([command, *RING, *extra, "--steps", "1000000"], cut)
    out, err = _interrupt_when_training(proc, cut, sig)
    step = _check_interrupted(proc, out, err, cut, f"ganfn {command}", signal.Signals(sig).name)
    total = str(step + 7)
    assert cli.main([command, "--resume", str(cut), "--steps", total, "--no-progress"]) == 0
    assert f"resumed from {cut / 'checkpoints' / f'ckpt-{step:08d}.pt'} at step {step}" in capsys.readouterr().out
    assert cli.main([command, *RING, *extra, "--steps", total, "--run-dir", str(tmp_path / "full")]) == 0
    (s_cut, m_cut), (s_full, m_full) = _final(cut), _final(tmp_path / "full")
    assert _same(s_cut, s_full) and m_cut == m_full and m_cut["stopped"] == "steps"


def test_sigint_stops_a_run_that_started_with_sigint_ignored(tmp_path):
    # As `cmd &` in a script starts it: Python then installs no KeyboardInterrupt handler of its own.
    run = tmp_path / "run"
    run.mkdir()
    proc = _start(["train", *RING, "--steps", "1000000"], run,
                  preexec=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out, err = _interrupt_when_training(proc, run, signal.SIGINT)
    _check_interrupted(proc, out, err, run, "ganfn train", "SIGINT")
