"""ganfn.loggers: the Logger interface, and MLflow / W&B runs read back with each library's own client.

No server and no network: MLflow logs to a file store in the run folder and is
read back with ``MlflowClient``; W&B runs offline and its ``.wandb`` run files
are decoded into wandb's own protobuf ``Record`` messages.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ganfn
from ganfn import cli, data, loggers, models
from ganfn import tensorboard as tb
from ganfn.evaluation import Evaluator
from ganfn.loop import fit

torch.set_num_threads(1)
FIGURE = "spread(x)"  # parentheses: MLflow refuses them in names, so the logger renames it


def _train(run_dir: Path, trackers, members: int | None) -> None:
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    gan = ganfn.GAN(G, D, latent_dim=latent)
    ev = Evaluator(lambda s: {FIGURE: float(s.std())}, FIGURE, n_samples=32, reference=data.ring8_centers())
    stacked = dict(seeds=[0, 1], hparams=[{"lr_d": 1e-4}, {"lr_d": 1e-3}]) if members else {}
    fit(gan, data.ring8, steps=4, batch_size=8, run_dir=run_dir, log_every=1, image_every=2, eval_every=2,
        evaluator=ev, progress=False, print_fn=lambda s: None, config={"data": "ring8", "note": None},
        trackers=trackers, **stacked)


def _tb_scalars(run_dir: Path, members: int | None) -> list[dict[str, list[tuple[int, float]]]]:
    """Every scalar the TensorBoard log holds, per member: ``{tag: [(step, value), ...]}``."""
    out = []
    for d in tb.member_dirs(run_dir / "tb", members):
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0})
        acc.Reload()
        out.append({t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]})
    return out


@given(st.integers(1, 4), st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=4),
       st.booleans())
def test_member_scalars_splits_the_member_axis_and_drops_non_finite_values(members, raw, stacked):
    vals = (raw * members)[:members] if stacked else raw[:1]
    n = members if stacked else None
    got = loggers.member_scalars({"a": torch.tensor(vals if stacked else vals[0]), "b": 2.0}, n)
    assert len(got) == (members if stacked else 1)
    for i, row in enumerate(got):
        assert row["b"] == 2.0
        assert ("a" in row) == math.isfinite(vals[i])
        if "a" in row:
            assert row["a"] == float(torch.tensor(vals[i]).double())


def test_every_logger_implements_the_interface(tmp_path):
    lg = tb.TensorBoardLogger(tmp_path, None)
    assert isinstance(lg, loggers.Logger) and isinstance(loggers.Fanout([lg, lg]), loggers.Logger)
    assert loggers.fanout([lg]) is lg
    lg.close()
    assert not isinstance(object(), loggers.Logger)


def test_a_missing_tracker_package_is_named_with_its_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "wandb") else real(name, *a))
    for flag in ("mlflow", "wandb"):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", f"--{flag}", "--run-dir", str(tmp_path / "r"), "--steps", "1"])
        assert e.value.code == 2
        assert f"pip install 'ganfn[{flag}]'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------ MLflow


def _mlflow_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ganfn")
    return client, client.search_runs([exp.experiment_id])


@pytest.mark.parametrize("members", [None, 2])
def test_mlflow_holds_every_tensorboard_scalar_params_images_and_files(tmp_path, members):
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'ganfn[mlflow]')")
    from ganfn.loggers.mlflow_logger import key

    _train(tmp_path, [loggers.mlflow()], members)
    client, runs = _mlflow_runs((tmp_path / "mlruns").resolve().as_uri())
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == (1 if members is None else 1 + members)
    parent = parents[0]
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                      key=lambda r: int(r.data.tags["member"]))
    member_runs = [parent] if members is None else children
    assert all(r.info.status == "FINISHED" for r in runs)
    for i, (run, tb_scalars) in enumerate(zip(member_runs, _tb_scalars(tmp_path, members), strict=True)):
        logged = run.data.metrics
        for tag, series in tb_scalars.items():  # TensorBoard's hparam/<figure> is MLflow's final/<figure>
            name = key(tag.replace("hparam/", "final/", 1))
            assert name in logged, (name, sorted(logged))
            if not tag.startswith("hparam/"):
                hist = client.get_metric_history(run.info.run_id, name)
                assert [(m.step, pytest.approx(m.value, rel=1e-6)) for m in hist] == series
        assert key(f"quality/{FIGURE}") == "quality/spread_x_" and "train/d_loss" in logged
        assert run.data.params["data"] == "ring8" and run.data.params["note"] == "None"
        assert run.data.params["seed"] == str([0, 1][i] if members else 0)
        images = [a.path for a in client.list_artifacts(run.info.run_id, "images/samples")]
        assert [Path(p).name for p in images] == ["samples_step00000002.png", "samples_step00000004.png"]
    if members:
        assert [float(r.data.params["lr_d"]) for r in children] == [1e-4, 1e-3]
        assert "lr_d" not in parent.data.params and parent.data.params["data"] == "ring8"  # the shared settings
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"samples.png", "losses.png", "metrics.json", "config.json"} <= files


def test_mlflow_tracking_uri_from_the_environment(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'ganfn[mlflow]')")
    store = (tmp_path / "elsewhere").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _train(tmp_path / "run", [loggers.mlflow()], None)
    assert not (tmp_path / "run" / "mlruns").exists()
    _, runs = _mlflow_runs(store)
    assert len(runs) == 1 and runs[0].info.run_name == "run"


def test_ganfn_sweep_mlflow_and_wandb_nest_the_members_under_the_sweep(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'ganfn[mlflow]')")
    pytest.importorskip("wandb", reason="W&B is not installed (pip install 'ganfn[wandb]')")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "sweep"
    code = cli.main(["sweep", "--grid", "lr_d=1e-4,1e-3", "--data", "ring8", "--model", "mlp", "--hidden", "8",
                     "--depth", "1", "--steps", "2", "--batch-size", "8", "--n-eval", "50", "--eval-every", "2",
                     "--log-every", "1", "--no-progress", "--run-dir", str(run), "--mlflow", "--wandb"])
    assert code == 0, capsys.readouterr().err
    _, runs = _mlflow_runs((run / "mlruns").resolve().as_uri())
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 2 and parent.data.params["grid"] == "lr_d=1e-4,1e-3"
    assert all("train/d_loss" in r.data.metrics and "final/modes" in r.data.metrics for r in kids)
    wb = {r["name"]: r for r in map(_wandb_run, _finished_run_files(run / "wandb", 3))}
    assert sorted(wb) == ["sweep", "sweep/member_00", "sweep/member_01"]
    assert [wb[f"sweep/member_0{i}"]["config"]["lr_d"] for i in (0, 1)] == [1e-4, 1e-3]
    assert all(wb[k]["group"] == "sweep" and "final/modes" in wb[k]["summary"] for k in wb if "member" in k)


# ------------------------------------------------------------------------------------------------ W&B


def test_an_unknown_wandb_mode_is_named(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="W&B is not installed (pip install 'ganfn[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ValueError, match="WANDB_MODE='ofline' is not a W&B mode"):
        loggers.wandb()(tmp_path / "run", None)
    assert not (tmp_path / "run").exists()


def wandb_records(path: Path) -> list:
    """The records of a W&B ``.wandb`` run file as wandb's own protobuf ``Record`` messages.

    The file is a LevelDB-style log (wandb's transaction log): a 7-byte header
    (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each a
    7-byte header (CRC-32C, length, type: 1 full, 2 first, 3 middle, 4 last) and
    its bytes; a block's tail shorter than a header is padding."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    if len(raw) < 7:  # not written yet
        return []
    ident, magic, version = struct.unpack("<4sHB", raw[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a .wandb run file"
    out, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # padding up to the next block
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if (length == 0 and kind == 0) or pos + 7 + length > len(raw):  # the end, or a chunk still being written
            break
        chunk, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            out.append(rec)
    return out


def _finished_run_files(folder: Path, n: int, timeout: float = 60.0) -> list[Path]:
    """The ``n`` offline run files in ``folder`` once each ends with its exit record.

    ``run.finish()`` returns before W&B's service has written the last records
    (its writer runs in another process), so the test waits for them."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        files = sorted(folder.glob("offline-run-*/run-*.wandb"))
        done = len(files) == n and all(
            any(r.WhichOneof("record_type") == "exit" for r in wandb_records(f)) for f in files)
        if done or time.monotonic() > deadline:
            return files
        time.sleep(0.2)


def _wandb_run(run_file: Path) -> dict:
    """One offline run: its name, group, config, history rows {step: {key: value}}, summary and saved files."""
    import json

    run: dict = {"history": {}, "config": {}, "summary": {}, "files": set()}
    records = wandb_records(run_file)
    assert any(r.WhichOneof("record_type") == "run" for r in records), \
        f"{run_file} has no run record: {[r.WhichOneof('record_type') for r in records]}"
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run["name"], run["group"] = rec.run.display_name, rec.run.run_group
            run["config"].update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
        elif kind == "config":
            run["config"].update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            run["history"].setdefault(row.pop("_step"), {}).update(row)
        elif kind == "summary":
            run["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in rec.summary.update})
        elif kind == "files":
            run["files"] |= {f.path for f in rec.files.files}
    return run


@pytest.mark.parametrize("members", [None, 2])
def test_wandb_offline_run_files_hold_every_tensorboard_scalar(tmp_path, monkeypatch, members):
    pytest.importorskip("wandb", reason="W&B is not installed (pip install 'ganfn[wandb]')")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # unset: offline, no login
    monkeypatch.setenv("WANDB_SILENT", "true")
    _train(tmp_path, [loggers.wandb()], members)
    files = _finished_run_files(tmp_path / "wandb", 1 if members is None else 1 + members)
    runs = {r["name"]: r for r in map(_wandb_run, files)}
    name = tmp_path.resolve().name
    assert len(runs) == (1 if members is None else 1 + members)
    member_runs = [runs[name]] if members is None else [runs[f"{name}/member_{i:02d}"] for i in range(members)]
    for i, (run, tb_scalars) in enumerate(zip(member_runs, _tb_scalars(tmp_path, members), strict=True)):
        for tag, series in tb_scalars.items():
            if tag.startswith("hparam/"):  # TensorBoard's hparam/<figure> is the summary's final/<figure>
                assert run["summary"][tag.replace("hparam/", "final/", 1)] == pytest.approx(series[0][1], rel=1e-6)
                continue
            got = [(s, row[tag]) for s, row in sorted(run["history"].items()) if tag in row]
            assert [(s, pytest.approx(v, rel=1e-6)) for s, v in got] == series, tag
        assert f"quality/{FIGURE}" in run["summary"]
        assert [s for s, row in sorted(run["history"].items()) if row.get("samples/_type") == "image-file"] == [2, 4]
        assert run["config"]["data"] == "ring8" and run["config"]["seed"] == ([0, 1][i] if members else 0)
        if members:
            assert run["group"] == name and run["config"]["lr_d"] == [1e-4, 1e-3][i]
    parent = runs[name]
    assert {"samples.png", "losses.png", "metrics.json", "config.json"} <= parent["files"]
    assert (files[0].parent / "files" / "metrics.json").exists() or any(
        (f.parent / "files" / "metrics.json").exists() for f in files)


# ------------------------------------------------------------------------------------------------ a run that fails


class _Recorder:
    """A tracker that records each close and how the run ended."""

    def __init__(self) -> None:
        self.closed: list[str | None] = []

    def log_params(self, params): ...
    def log_scalars(self, step, values): ...
    def log_images(self, step, name, images): ...
    def log_summary(self, figures): ...
    def log_artifact(self, path): ...

    def close(self) -> None:
        self.closed.append(loggers.failure())


def _failing_data(at: int, error: BaseException):
    calls = {"n": 0}

    def sample(n, generator):
        calls["n"] += 1
        if calls["n"] > at:
            raise error
        return data.ring8(n, generator)
    return sample


@pytest.mark.parametrize("error, ended", [(RuntimeError("disk full"), "failed"), (KeyboardInterrupt(), "killed"),
                                          (None, None)])
def test_trackers_are_closed_once_with_how_the_run_ended(tmp_path, error, ended):
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    rec = _Recorder()
    sampler = data.ring8 if error is None else _failing_data(3, error)
    run = lambda: fit(ganfn.GAN(G, D, latent_dim=latent), sampler, steps=6, batch_size=8,
                      run_dir=tmp_path, progress=False, print_fn=lambda s: None, trackers=[lambda d, m: rec])
    if error is None:
        run()
    else:
        with pytest.raises(type(error)):
            run()
    assert rec.closed == [ended]


def test_a_failed_run_ends_failed_in_mlflow(tmp_path):
    pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'ganfn[mlflow]')")
    G, D, latent = models.build("mlp", (2,), hidden=8, depth=1)
    with pytest.raises(RuntimeError, match="disk full"):
        fit(ganfn.GAN(G, D, latent_dim=latent), _failing_data(3, RuntimeError("disk full")), steps=6, batch_size=8,
            run_dir=tmp_path, progress=False, print_fn=lambda s: None, trackers=[loggers.mlflow()])
    _, runs = _mlflow_runs((tmp_path / "mlruns").resolve().as_uri())
    assert [r.info.status for r in runs] == ["FAILED"]
