"""`ganfn train / sweep / eval` through ganfn.cli.main, with tiny runs."""
import json

import pytest
import torch
from conftest import cli_error, run_cli

from ganfn import cli, cli_train
from ganfn import presets as P

torch.set_num_threads(1)
TINY = ["--steps", "4", "--batch-size", "16", "--n-eval", "200", "--eval-every", "2", "--log-every", "1",
        "--no-progress"]


_run, _error = run_cli, cli_error  # ganfn in this process: its stdout, or its usage error


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = capsys.readouterr().out
    for name in P.FIELDS:
        if name == "preset" or name in cli._SWEEP_ONLY:
            continue
        assert "--" + name.replace("_", "-") in text, name
    for flag in ("--preset", "--config", "--resume", "--seeds", "--device", "--compile"):
        assert flag in text
    for preset in P.PRESETS:
        assert preset in text
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--help"])
    sweep_text = capsys.readouterr().out
    for name in cli._SWEEP_ONLY:  # the grid and the population options belong to ganfn sweep
        assert "--" + name.replace("_", "-") in sweep_text, name


def test_no_arguments_means_digits_dcgan():
    parser = cli.make_parser()
    args = parser.parse_args(["train"])
    cfg, resume = cli._config_from_args(args, parser)
    assert resume is None and cfg == P.Config()
    assert (cfg.data, cfg.model, cfg.image_size or 8) == ("digits", "dcgan", 8)


def test_train_ring8_writes_outputs(tmp_path, capsys):
    run = tmp_path / "run"
    out = _run(["train", "--data", "ring8", "--model", "mlp", "--penalty", "gp", "--loss", "wasserstein",
                "--n-critic", "2", "--lr-g", "1e-4", "--lr-d", "3e-4", "--run-dir", str(run), *TINY], capsys)
    assert "modes" in out and "final:" in out
    for f in ("samples.png", "losses.png", "metrics.json", "config.json"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["config"]["n_critic"] == 2 and m["config"]["lr_d"] == 3e-4
    assert "modes" in m["final"]["figures"][0]
    assert [r["step"] for r in m["train"]] == [1, 2, 3, 4]
    assert abs(m["train"][0]["lr_d"] - 3e-4) < 1e-9 and abs(m["train"][0]["lr_g"] - 1e-4) < 1e-9


def test_digits_default_model_runs(tmp_path, capsys):
    out = _run(["train", "--run-dir", str(tmp_path), *TINY], capsys)
    assert "FD-LeNet(digits)" in out and "untrained generator" in out


def test_seeds_prints_per_seed_table_and_eval(tmp_path, capsys):
    out = _run(["train", "--data", "ring8", "--model", "mlp", "--seeds", "3", "--run-dir", str(tmp_path), *TINY],
               capsys)
    assert "| member | seed |" in out and "mean ± std" in out and "diverged" in out
    assert all(f"| {i} | {i} |" in out for i in range(3))
    assert (tmp_path / "samples_member02.png").is_file()
    out = _run(["eval", str(tmp_path), "--n-eval", "100"], capsys)
    assert all(f"member {i}: modes" in out for i in range(3))


def test_sweep_sorts_by_quality(tmp_path, capsys):
    out = _run(["sweep", "--grid", "lr_d=1e-4,1e-3;lr_g=1e-4,2e-4", "--data", "ring8", "--model", "mlp",
                "--run-dir", str(tmp_path), *TINY], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "member" not in line and "mean" not in line]
    assert len(rows) == 4
    header = next(line for line in out.splitlines() if line.startswith("| member"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    i = cols.index("modes")
    modes = [float(r.strip("|").split("|")[i]) for r in rows]
    assert modes == sorted(modes, reverse=True)


def test_resume_continues_a_run(tmp_path, capsys):
    _run(["train", "--data", "ring8", "--model", "mlp", "--run-dir", str(tmp_path), *TINY], capsys)
    out = _run(["train", "--resume", str(tmp_path), "--steps", "6", "--no-progress"], capsys)
    assert "resumed from" in out and "at step 4" in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["last"]["step"] == 6


def test_config_file_and_precedence(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('data = "ring8"\nmodel = "mlp"\nlr-d = 5e-4\nn_critic = 3\nreal_label = 0.9\n')
    parser = cli.make_parser()
    sub = parser._subparsers._group_actions[0].choices["train"]
    c, _ = cli._config_from_args(parser.parse_args(["train", "--config", str(cfg), "--n-critic", "2"]), sub)
    assert (c.data, c.model, c.lr_d, c.n_critic, c.real_label) == ("ring8", "mlp", 5e-4, 2, 0.9)
    c, _ = cli._config_from_args(parser.parse_args(["train", "--preset", "wgan-clip", "--config", str(cfg)]), sub)
    assert (c.optimizer, c.penalty, c.n_critic, c.lr_d) == ("rmsprop", "weight_clip", 3, 5e-4)
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    assert "unknown setting 'learning_rate'" in _error(["train", "--config", str(bad)], capsys)
    assert "config file not found" in _error(["train", "--config", str(tmp_path / "none.toml")], capsys)
    broken = tmp_path / "broken.toml"
    broken.write_text("data = \n")
    assert "not valid TOML" in _error(["train", "--config", str(broken)], capsys)


def test_bad_options_give_clear_errors(tmp_path, capsys):
    assert "invalid choice: 'bogus'" in _error(["train", "--loss", "bogus"], capsys)
    assert "invalid int value" in _error(["train", "--steps", "many"], capsys)
    assert "--lr-g must be a positive number" in _error(["train", "--lr-g", "-1"], capsys)
    assert "--batch-size must be an integer >= 1" in _error(["train", "--batch-size", "0"], capsys)
    missing = tmp_path / "no" / "such" / "folder"
    assert str(missing) in _error(["train", "--data", str(missing)], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images" in _error(["train", "--data", str(empty)], capsys)
    assert "--resume" in _error(["train", "--resume", str(tmp_path / "nothing")], capsys)
    assert "parse_grid" in _error(["sweep", "--grid", "lr_d"], capsys)
    assert "no such run directory" in _error(["eval", str(tmp_path / "nothing")], capsys)
    assert "the following arguments are required: --grid" in _error(["sweep"], capsys)
    assert "unknown hyperparameter" in _error(["sweep", "--grid", "lr_x=1,2", "--data", "ring8", "--model", "mlp",
                                               "--run-dir", str(tmp_path / "s"), *TINY], capsys)


@pytest.mark.slow
def test_default_digits_run_beats_a_quarter_of_the_untrained_fd(tmp_path, capsys):
    # The default settings, shortened to 1000 of their 10000 steps (10-40 s):
    # FD-LeNet(digits) must already be below a quarter of the untrained generator's.
    _run(["train", "--steps", "1000", "--eval-every", "1000", "--run-dir", str(tmp_path), "--no-progress"], capsys)
    m = json.loads((tmp_path / "metrics.json").read_text())
    fd0 = m["initial"]["figures"][0]["FD-LeNet(digits)"]
    fd = m["final"]["figures"][0]["FD-LeNet(digits)"]
    assert fd < fd0 / 4, (fd, fd0)


def test_fp16_precision_builds_loss_scaled_optimizers():
    from ganfn import presets as P

    cfg = P.merge(P.Config(), {"data": "ring8", "model": "mlp", "precision": "fp16"})
    gan = P.build_gan(cfg, (2,))
    state = gan.init(0)
    assert "loss_scale" in state.g.opt and "loss_scale" in state.d.opt


def _cfg_of(argv):
    parser = cli.make_parser()
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    return cli._config_from_args(parser.parse_args(argv), sub)[0]


def test_default_model_follows_the_data():
    assert _cfg_of(["train", "--data", "ring8"]).model == "mlp"
    assert _cfg_of(["train", "--data", "grid25"]).model == "mlp"
    assert _cfg_of(["train"]).model == "dcgan"
    assert _cfg_of(["train", "--data", "ring8", "--model", "dcgan"]).model == "dcgan"  # an explicit choice stays
    assert _cfg_of(["train", "--preset", "ring8-hinge"]).model == "mlp"


def test_ring8_with_no_other_flags_trains(tmp_path, capsys):
    out = _run(["train", "--data", "ring8", "--run-dir", str(tmp_path), *TINY], capsys)
    assert "mlp on ring8 (2,)" in out and "modes" in out


@pytest.mark.parametrize("model, size", [("dcgan", 32), ("sngan", 32), ("mlp", 28)])
def test_28_pixel_data_gets_a_size_the_model_takes(tmp_path, capsys, monkeypatch, fake_data_root, model, size):
    # A tiny Fashion-MNIST in Debian's layout (tests/conftest.py): the data and the evaluator both read it.
    monkeypatch.setenv(P.gdata.roots.ENV, str(fake_data_root))
    argv = ["train", "--data", "fashion_mnist", "--run-dir", str(tmp_path), *TINY]
    out = _run(argv + ([] if model == "dcgan" else ["--model", model]), capsys)
    assert f"(1, {size}, {size}), image size {size} (chosen for the data" in out
    out = _run(["train", "--data", "fashion_mnist", "--image-size", "16", "--run-dir", str(tmp_path / "b"), *TINY],
               capsys)
    assert "(1, 16, 16)," in out and "chosen for the data" not in out


def test_conv_size_is_the_next_power_of_two():
    assert [P.conv_size(n) for n in (1, 8, 9, 28, 32, 33, 64)] == [8, 8, 16, 32, 32, 64, 64]


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_shows_every_default_without_noise(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "SUPPRESS" not in text and "(default: False)" not in text
    for name, f in P.FIELDS.items():
        if name in ("preset", "grid") or f.type in ("bool", bool) or (command == "train" and name in cli._SWEEP_ONLY):
            continue
        help_text = " ".join(cli._help(name).split())
        assert help_text in text and "default" in help_text.lower(), name
    assert "(default: 0.999)" in text and f"(default: {P.DEFAULT_STEPS})" in text


def test_sweep_messages_say_sweep_and_a_penalty_grid_switches_it_on(tmp_path, capsys):
    out = _run(["sweep", "--grid", "lr_d=1e-4,2e-4;gp_weight=1,10", "--data", "ring8", "--loss", "wasserstein",
                "--run-dir", str(tmp_path), *TINY], capsys)
    assert "ganfn sweep: --grid sweeps gp_weight, so --penalty gp is switched on" in out
    assert "ganfn sweep: mlp on ring8" in out and "ganfn train" not in out
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["config"]["penalty"] == "gp" and sorted({h["gp_weight"] for h in m["hparams"]}) == [1, 10]
    err = _error(["sweep", "--grid", "gp_weight=1,10", "--penalty", "r1", "--data", "ring8", *TINY], capsys)
    assert "ganfn sweep: error" in err and "give --penalty gp" in err
    err = _error(["sweep", "--grid", "gp_weight=1,10;r1_weight=1,2", "--data", "ring8", *TINY], capsys)
    assert "different penalties" in err


def test_resume_with_fewer_steps_refuses_and_changes_nothing(tmp_path, capsys):
    _run(["train", "--data", "ring8", "--run-dir", str(tmp_path), *TINY], capsys)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    err = _error(["train", "--resume", str(tmp_path), "--steps", "2", "--no-progress"], capsys)
    assert "at step 4 and the run was asked for 2 steps: nothing was trained and no file was changed" in err
    out = _run(["train", "--resume", str(tmp_path), "--no-progress"], capsys)  # the same steps: a finished run
    assert "at step 4 and the run was asked for 4 steps" in out
    err = _error(["train", "--data", "ring8", "--run-dir", str(tmp_path), *TINY], capsys)  # a new run on top of it
    assert "already holds a run" in err and f"--resume {tmp_path}" in err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_first_lenet_training_is_announced(tmp_path, capsys, monkeypatch):
    from ganfn.metrics import lenet

    monkeypatch.setattr(lenet, "cache_path", lambda *a, **k: tmp_path / "lenet.pt")
    cli_train._announce_lenet(P.Config())
    assert "training the LeNet that scores digits" in capsys.readouterr().out
    (tmp_path / "lenet.pt").write_bytes(b"")
    cli_train._announce_lenet(P.Config())
    assert capsys.readouterr().out == ""


def test_eval_explains_negative_kid(tmp_path, capsys):
    _run(["train", "--run-dir", str(tmp_path), *TINY], capsys)
    out = _run(["eval", str(tmp_path), "--n-eval", "200"], capsys)
    assert "KID-LeNet(digits)" in out and "unbiased" in out


def test_log_lines_reach_a_pipe_as_they_happen(tmp_path):
    import subprocess
    import sys

    # A long run, read through a pipe: the evaluation lines must arrive while it trains.
    proc = subprocess.Popen([sys.executable, "-m", "ganfn", "train", "--data", "ring8", "--steps", "1000000",
                             "--eval-every", "5", "--n-eval", "100", "--run-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert proc.poll() is None, "the run ended before its lines were read"
        assert lines[0].startswith("ganfn train:") and lines[2].startswith("step 5 |"), lines
    finally:
        proc.kill()
        proc.wait()


def _cfg(argv):
    parser = cli.make_parser()
    return cli._config_from_args(parser.parse_args(["train", *argv]), parser)[0]


def test_compile_is_chosen_by_the_run_size_unless_given():
    assert cli_train.auto_compile(4, 1000) and cli_train.auto_compile(16, P.DEFAULT_STEPS)
    assert not cli_train.auto_compile(1, 10**6) and not cli_train.auto_compile(3, 10**6)
    assert not cli_train.auto_compile(16, 999)
    assert _cfg([]).compile is None  # not given: auto
    assert _cfg(["--compile"]).compile is True and _cfg(["--no-compile"]).compile is False


def test_speed_line_reports_member_steps_and_the_compile_apart():
    hist = {"steps_per_s": 10.0, "first_step_s": 30.0, "steps_run": 401, "wall_time_s": 40.0}
    assert cli_train._rates(hist, 4, compiled=True) == ("10.0 steps/s of training = 40.0 member-steps/s; "
                                                        "first step 30.0 s (compile included), "
                                                        "then 40.0 steps/s = 160.0 member-steps/s")
    assert cli_train._rates(hist, 1, compiled=False) == "10.0 steps/s of training"
