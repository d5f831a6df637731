"""The command line: instant help without TensorFlow, clear errors, kill -9 and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kclassify.cli import main

PY = sys.executable


def _run(*args, timeout=300, env=None):
    return subprocess.run([PY, "-m", "kclassify", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# What makes a command slow to start: TensorFlow (~4 s), Keras and the libraries that take a second or so
# each. Help must import none of them; which modules load decides it, not a wall time, which depends on the
# machine (0.2 s on one, over 1 s on another under load).
HEAVY = ("tensorflow", "keras", "keras_tuner", "matplotlib", "sklearn", "scipy", "cleanlab", "fastapi", "PIL")


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    code = (
        "import sys\n"
        "from kclassify.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--data" in out.stdout or "fit" in out.stdout
    assert out.stdout.splitlines()[-1] == "heavy: []", f"`kclassify {' '.join(argv)}` imported them"


def test_every_command_prints_its_help(capsys):
    """Help strings are %-formatted by argparse: a stray % in one (a TTA policy's "87.5%") broke evaluate's."""
    from kclassify.cli.parser import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"fit", "evaluate", "predict", "serve", "compare"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0, command
        out = capsys.readouterr().out
        assert out.startswith(f"usage: kclassify {command}") and "%%" not in out, command


def test_fit_help_lists_the_flags_users_type(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--output", "--backbone", "--weights", "--image-size", "--epochs", "--batch-size",
                 "--optimizer", "--lr", "--dropout", "--seed", "--config", "--hparams", "--split-file",
                 "--deterministic"):
        assert flag in text
    assert "small_cnn" in text and "mobilenet_v3_small" in text


def test_bad_flag_value_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as err:
        main(["fit", "--optimizer", "adamm"])
    assert err.value.code == 2
    assert "invalid choice: 'adamm'" in capsys.readouterr().err


def test_config_errors_are_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "run.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kclassify: error:") and "unknown key train.epoch" in err and "Did you mean 'epochs'" in err
    bad.write_text("backbone: resnet9000\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert "Valid backbones: small_cnn" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_models_lists_the_registry(capsys, monkeypatch):
    assert main(["models", "--no-params"]) == 0
    out = capsys.readouterr().out
    assert "small_cnn" in out and "mobilenet_v3_small" in out and "imagenet weights" in out
    import kclassify.models.build as build

    monkeypatch.setattr(build, "count_parameters", lambda name: {"small_cnn": 392_433}.get(name, 1_000_000))
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "parameters" in lines[0] and len(lines) == 1 + 49
    assert next(line for line in lines if line.startswith("small_cnn ")).split()[3] == "0.4M"


@pytest.mark.slow
def test_kill_9_then_same_command_resumes(image_folder, tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--data", str(image_folder), "--output", str(out), "--epochs", "12", "--image-size", "16",
            "--batch-size", "4", "--quiet", "--hparams", str(tmp_path / "h.yaml")]
    (tmp_path / "h.yaml").write_text("hparams:\n  optimizer: momentum\n  lr: 0.01\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([PY, "-m", "kclassify", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    meta = out / "checkpoints" / "backup" / "train" / "training_metadata.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "fit finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    done = _run(*args, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming the unfinished run" in done.stderr
    with open(out / "history.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == list(range(12))
    # 12 epochs on colour-coded classes: far above the 1/3 of chance (a broken resume would not be)
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0.66
    cfg = (out / "config.yaml").read_text()
    assert "optimizer: momentum" in cfg and "image_size: 16" in cfg


def test_data_errors_come_before_tensorflow(tmp_path):
    from conftest import write_class_folder

    one = write_class_folder(tmp_path / "one", classes=("only",), per_class=2)
    empty = write_class_folder(tmp_path / "empty", classes=("a", "b"), per_class=2)
    (empty / "c").mkdir()
    for data, message in ((one, "at least 2 classes"), (empty, "has no images"), (tmp_path / "nope", "does not exist")):
        code = (
            "import sys\nfrom kclassify.cli import main\n"
            f"rc = main(['fit', '--data', {str(data)!r}])\n"
            "assert rc == 2 and 'tensorflow' not in sys.modules, (rc, 'tensorflow' in sys.modules)\n"
        )
        out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert message in out.stderr


def test_budget_flags_read_counts_and_reject_nonsense(capsys):
    from kclassify.cli import _count, build_parser

    assert (_count("250k"), _count("5M"), _count("1.5m"), _count("12000")) == (250_000, 5_000_000, 1_500_000, 12_000)
    args = build_parser().parse_args(["tune", "--max-params", "2M", "--max-latency-ms", "4.5"])
    assert (args.max_params, args.max_latency_ms, args.latency_threads) == (2_000_000, 4.5, 1)
    for bad in (["--max-params", "lots"], ["--max-params", "-5"], ["--max-latency-ms", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["tune", *bad])
    assert "expected a positive" in capsys.readouterr().err


def test_then_fit_retrains_by_default_and_reuses_when_asked(capsys):
    from kclassify.cli import build_parser

    parse = build_parser().parse_args
    assert (parse(["tune"]).then_fit, parse(["tune", "--then-fit"]).then_fit,
            parse(["tune", "--then-fit", "reuse"]).then_fit) == (None, "retrain", "reuse")
    assert parse(["tune", "--then-fit", "--space", "scratch"]).space == "scratch"  # the value stays optional
    with pytest.raises(SystemExit):
        parse(["tune", "--then-fit", "keep"])
    assert "invalid choice: 'keep'" in capsys.readouterr().err


@pytest.mark.parametrize("flags,says", [
    (["--final-share", "0.5", "--then-fit"], "add --time-budget and --then-fit"),
    (["--final-share", "0.5", "--time-budget", "10m"], "add --time-budget and --then-fit"),
    (["--final-share", "0.5", "--time-budget", "10m", "--then-fit", "reuse"], "not reuse"),
    (["--final-share", "1.5", "--time-budget", "10m", "--then-fit"], "between 0 and 1"),
    (["--time-budget", "10m", "--distributed", "worker", "--oracle", "127.0.0.1:8000"], "Size a distributed search"),
    (["--final-data", "train+val"], "add --then-fit"),
    (["--final-data", "train+val", "--then-fit", "reuse"], "not reuse"),
])
def test_final_share_and_time_budget_need_what_keeps_them(capsys, flags, says):
    """Refused before TensorFlow loads, with what to add."""
    assert main(["tune", *flags]) == 2
    assert says in capsys.readouterr().err


def test_tune_setting_errors_come_before_tensorflow():
    code = (
        "import sys\nfrom kclassify.cli import main\n"
        "rc = main(['tune', '--final-share', '1.5', '--time-budget', '10m', '--then-fit'])\n"
        "assert rc == 2 and 'tensorflow' not in sys.modules, (rc, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "between 0 and 1" in out.stderr
