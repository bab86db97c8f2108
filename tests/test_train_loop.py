"""The training loop on the ``tiny`` preset: it learns, it resumes exactly, it logs, plots and keeps the best.

All runs share one 16-question ``shapes`` training split and its prepared proposals. The tiny
preset's backbones (CLIP, DINOv2) are frozen and random and its word-level vocabulary knows only a
few colour and shape words, so within a test's budget it cannot learn the shapes world well
enough to generalise to unseen scenes (80 steps on 200 questions moved held-out gIoU only
0.15 -> 0.16). What a few dozen steps can show reliably is that the loop fits its training data:
the learning test validates on the training split itself, the classic "overfit a small set" check
(measured over training seeds 0-2 and data seeds 3, 7, 11: gIoU 0.03-0.25 -> 0.54-0.72).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from eval import References
from eval.contract import load_split
from llmseg.__main__ import main
from llmseg.data.shapes import make_shapes
from llmseg.model.llmseg import LLMSeg
from llmseg.model.presets import get_preset
from llmseg.prepare import load_prepared, prepare
from llmseg.train import TRAIN_STATE, TrainingData, read_metrics, train, train_config_for, validate

LEARN_STEPS = 48


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shapes16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset folder with a 16-question train split, folder with its prepared proposals)."""
    root = tmp_path_factory.mktemp("shapes16")
    make_shapes(root / "data", train=16, validation=0, test=0, seed=3)
    prepare(get_preset("tiny"), str(root / "data"), "train", root / "prepared")
    return root / "data", root / "prepared"


@pytest.fixture(scope="module")
def learned(shapes16: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny run that validates on its own training questions at steps 0, 24 and 48."""
    data, prepared = shapes16
    output = tmp_path_factory.mktemp("learned")
    settings = {
        "steps": LEARN_STEPS,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "eval_every": LEARN_STEPS // 2,
        "log_every": 8,
        "validation_split": "train",
    }
    state = train(get_preset("tiny"), str(data), output, train_config_for("tiny", settings), prepared_dir=prepared)
    return output, state


def test_validation_giou_rises_clearly_above_the_untrained_value(learned: tuple[Path, dict]) -> None:
    output, state = learned
    giou = dict(read_metrics(output / "metrics.csv")["val_giou"])
    assert sorted(giou) == [0, LEARN_STEPS // 2, LEARN_STEPS]
    assert giou[LEARN_STEPS] >= giou[0] + 0.2, giou
    losses = [value for _, value in read_metrics(output / "metrics.csv")["loss"]]
    assert losses[-1] < 0.8 * losses[0]
    assert state["step"] == LEARN_STEPS


def test_metrics_log_and_plot(learned: tuple[Path, dict]) -> None:
    output, _ = learned
    series = read_metrics(output / "metrics.csv")
    for name in ("loss", "ce", "align", "iop", "lr", "val_loss", "val_giou", "val_ciou"):
        assert name in series, name
    assert [step for step, _ in series["loss"]] == list(range(8, LEARN_STEPS + 1, 8))
    assert any(name.startswith("val_giou/") for name in series)  # per-tag scores
    assert all(0.0 <= value <= 1.0 for _, value in series["val_giou"])
    warm = series["lr"][-1][1]
    assert warm < series["lr"][0][1]  # the cosine decay shows in the log

    png = output / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        width, height = image.size
        colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    assert width >= 600 and height >= 300
    assert colours > 3  # not a blank canvas
    assert json.loads((output / "train_config.json").read_text())["steps"] == LEARN_STEPS


def test_best_checkpoint_is_the_best_validated_step_and_loads(
    learned: tuple[Path, dict], shapes16: tuple[Path, Path]
) -> None:
    output, state = learned
    giou = read_metrics(output / "metrics.csv")["val_giou"]
    best_step, best_value = max(giou, key=lambda item: item[1])
    assert state["best_step"] == best_step
    assert state["best_giou"] == pytest.approx(best_value, abs=1e-5)
    saved = json.loads((output / "best" / "validation_report.json").read_text())
    assert saved["giou"] == pytest.approx(best_value, abs=1e-5)

    model = LLMSeg.from_pretrained(output / "best")  # a normal model folder
    data, prepared = shapes16
    split = load_split(str(data), "train")
    report, _ = validate(
        model, TrainingData(split, load_prepared(prepared, "train")), References.from_split(split), batch_size=8
    )
    assert report.giou == pytest.approx(best_value, abs=1e-5)


def _tensors_equal(a: object, b: object) -> bool:
    """Deep equality of nested state dicts, tensors compared bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(shapes16: tuple[Path, Path], tmp_path: Path) -> None:
    """Dropout is switched on so that the resumed run also needs the RNG state to match.

    6 steps of 2 accumulated micro-batches of 2 cross the 16-question epoch boundary at step 4;
    the interruption comes after step 3.
    """
    data, prepared = shapes16
    config = get_preset("tiny")
    config.vlm.lora_dropout = 0.2
    config.selector.dropout = 0.2
    settings = train_config_for(
        "tiny",
        {
            "steps": 6,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "eval_every": 100,
            "checkpoint_every": 2,
            "validation_split": "train",
            "validation_limit": 2,
        },
    )
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(config, str(data), straight, settings, prepared_dir=prepared)
    first = train(config, str(data), interrupted, settings, prepared_dir=prepared, stop_after=3)
    assert first["step"] == 3
    assert json.loads((interrupted / "last" / TRAIN_STATE).read_text())["step"] == 3
    halfway = load_file(str(interrupted / "last" / "model.safetensors"))
    second = train(config, str(data), interrupted, settings, prepared_dir=prepared)
    assert second == json.loads((straight / "last" / TRAIN_STATE).read_text())

    weights = [load_file(str(run / "last" / "model.safetensors")) for run in (straight, interrupted)]
    assert weights[0].keys() == weights[1].keys() == halfway.keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not all(torch.equal(weights[0][name], halfway[name]) for name in halfway)  # the second call trained
    for name in ("optimizer.bin", "scheduler.bin"):
        saved = [
            torch.load(run / "last" / name, map_location="cpu", weights_only=True) for run in (straight, interrupted)
        ]
        assert _tensors_equal(*saved), name
    scheduler = torch.load(straight / "last" / "scheduler.bin", map_location="cpu", weights_only=True)
    assert scheduler["last_epoch"] == 6  # stepped once per optimiser step, not per micro-batch


def test_cli_trains_and_writes_the_run_folder(shapes16: tuple[Path, Path], tmp_path: Path) -> None:
    data, prepared = shapes16
    output = tmp_path / "run"
    command = [sys.executable, "-m", "llmseg", "train", "--preset", "tiny", "--data", str(data)]
    command += ["--prepared", str(prepared), "--output", str(output), "--steps", "3", "--batch-size", "2"]
    command += ["--validation-split", "train", "--validation-limit", "2", "--data-workers", "0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "best validation gIoU" in result.stdout
    for name in ("last/trainer_state.json", "best/config.json", "metrics.csv", "training.png", "train_config.json"):
        assert (output / name).is_file(), name
    assert json.loads((output / "train_config.json").read_text())["batch_size"] == 2


def test_two_processes_train_through_accelerate_launch(shapes16: tuple[Path, Path], tmp_path: Path) -> None:
    """The documented multi-GPU command, on two CPU processes (gloo): shares, checkpoints, one report."""
    data, prepared = shapes16
    output = tmp_path / "run"
    with socket.socket() as probe:  # a free port: other test runs may share this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(port), "-m", "llmseg", "train", "--preset", "tiny", "--data", str(data)]
    command += ["--prepared", str(prepared), "--output", str(output), "--steps", "2", "--batch-size", "2"]
    command += ["--validation-split", "train", "--validation-limit", "2", "--data-workers", "0"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best validation gIoU") == 1
    assert (output / "last" / "random_states_0.pkl").is_file() and (output / "last" / "random_states_1.pkl").is_file()
    assert json.loads((output / "last" / TRAIN_STATE).read_text())["step"] == 2
    assert [step for step, _ in read_metrics(output / "metrics.csv")["loss"]] == [2]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--preset", "no-such-preset"], "no model folder, preset or Hub model named"),
        (["--steps", "0"], "at least 1"),
        (["--eval-every", "0"], "eval_every"),
    ],
)
def test_cli_errors_are_one_line(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--preset": "tiny", "--data": str(tmp_path / "nowhere"), "--output": str(tmp_path / "run")}
    for flag, value in zip(arguments[::2], arguments[1::2], strict=True):
        base[flag] = value
    assert main(["train", *[item for pair in base.items() for item in pair]]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error and message in error, error


@pytest.mark.parametrize("arguments", [["--steps", "many"], ["--mixed-precision", "fp8"]])
def test_cli_rejects_malformed_flag_values(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny", "--data", "d", *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("python -m llmseg train: error: argument " + arguments[0])
    assert not any("Traceback" in line for line in error)
