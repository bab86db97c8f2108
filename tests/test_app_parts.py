"""The app's parts in-process: settings, result formatting, table display, plot, model holder, submit."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from eval import rle
from leaderboard import SubmissionRejected
from leaderboard.benchmarks import Benchmark
from llmseg.model.proposals import Proposals
from llmseg.pipeline import SegmentationResult
from llmseg_app.demo import PROPOSAL_COLUMNS, DemoTab, format_result, model_banner, text_answer
from llmseg_app.examples import pick_diverse
from llmseg_app.leaderboard_tab import LeaderboardTab, datatypes, display_table, searchable
from llmseg_app.model_service import ModelService, ModelStatus, ModelUnavailable, on_gpu_when_available
from llmseg_app.overlays import proposal_overlay
from llmseg_app.plots import score_plot
from llmseg_app.settings import AppSettings, settings_from_args
from llmseg_app.submit import SubmitTab

ROOT = Path(__file__).resolve().parent.parent

# settings


def test_flags_win_over_environment_and_leaderboard_flags_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSEG_PRESET", "tiny")
    monkeypatch.setenv("LLMSEG_NUM_EXAMPLES", "3")
    assert AppSettings.from_env().preset == "tiny"
    settings = settings_from_args(["--preset", "shapes", "--db", "x.sqlite", "--rate-limit", "7", "--no-preload"])
    assert settings.preset == "shapes"
    assert settings.num_examples == 3
    assert settings.preload is False
    assert settings.leaderboard_overrides == {"db_path": "x.sqlite", "rate_limit_per_day": 7}


def test_bad_environment_values_are_value_errors_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSEG_QUEUE_SIZE", "many")
    with pytest.raises(ValueError, match="LLMSEG_QUEUE_SIZE"):
        AppSettings.from_env()
    monkeypatch.setenv("LLMSEG_QUEUE_SIZE", "0")
    with pytest.raises(ValueError, match="queue_size"):
        AppSettings.from_env()


def test_login_is_required_on_spaces_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert AppSettings.from_env().require_login is False
    monkeypatch.setenv("SPACE_ID", "someone/llmseg")
    assert AppSettings.from_env().require_login is True


def test_the_command_line_reports_a_bad_setting_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import app

    monkeypatch.setenv("LLMSEG_NUM_EXAMPLES", "lots")
    assert app.main([]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: LLMSEG_NUM_EXAMPLES='lots' is not an integer"]


# the demo's result formatting


def fake_result(selected: list[bool], *, size: tuple[int, int] = (20, 30)) -> SegmentationResult:
    """Four proposals: quadrant-ish boxes with known scores."""
    height, width = size
    masks = np.zeros((4, height, width), dtype=bool)
    masks[0, :10, :15] = True
    masks[1, 10:, :15] = True
    masks[2, :10, 15:] = True
    masks[3, 5:15, 5:25] = True
    chosen = np.array(selected)
    union = masks[chosen].any(axis=0) if chosen.any() else np.zeros((height, width), dtype=bool)
    return SegmentationResult(
        mask=union,
        proposals=Proposals(masks=masks, scores=np.ones(4, dtype=np.float32)),
        iop=np.array([0.2, 0.9, 0.5, 0.9], dtype=np.float32),
        similarity=np.array([0.1, 0.3, 0.2, 0.6], dtype=np.float32),
        selected=chosen,
        existence=None,
        answer=None,
        timings={"proposals": 0.01, "vlm": 0.02, "total": 0.03},
    )


def test_proposals_are_listed_by_iop_then_similarity_and_the_mask_round_trips() -> None:
    image = np.full((20, 30, 3), 128, dtype=np.uint8)
    result = fake_result([False, True, False, True])
    out = format_result(image, result, proposals_shown=2)

    assert list(out.proposals.columns) == PROPOSAL_COLUMNS
    # iop 0.9 (sim 0.6) > 0.9 (sim 0.3) > 0.5 > 0.2
    assert out.proposals["IoP"].tolist() == pytest.approx([0.9, 0.9, 0.5, 0.2])
    assert out.proposals["similarity"].tolist() == pytest.approx([0.6, 0.3, 0.2, 0.1])
    assert out.proposals["selected"].tolist() == ["yes", "yes", "", ""]
    assert out.proposals["area %"].tolist() == pytest.approx([100 * 200 / 600, 100 * 150 / 600, 25.0, 25.0], abs=0.05)
    assert len(out.gallery) == 2 and "selected" in out.gallery[0][1]

    np.testing.assert_array_equal(rle.decode(out.details["mask"]), result.mask)
    assert out.details["selected"] == [1, 3]
    (annotation,) = out.annotated[1]
    np.testing.assert_array_equal(annotation[0] > 0, result.mask)
    assert "total 30 ms" in out.timings


def test_an_empty_selection_has_no_overlay_and_says_nothing_matches() -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    out = format_result(image, fake_result([False] * 4), proposals_shown=6)
    assert out.annotated[1] == []
    assert out.details["mask_area"] == 0
    assert out.answer == "Nothing in the image matches."


def test_the_answer_is_the_models_words_or_says_what_was_selected() -> None:
    assert text_answer("  The green star.  ", 1, True) == "The green star."
    assert text_answer("....", 2, True) == "(no text answer from the model) 2 regions selected."
    assert text_answer("", 0, False) == "(no text answer from the model) Nothing in the image matches."
    assert text_answer(None, 1, True) == "1 region selected."


def test_overlays_are_drawn_on_the_image_resized_to_the_proposals() -> None:
    image = np.full((40, 60, 3), 200, dtype=np.uint8)  # the proposals live at half size (working size)
    out = format_result(image, fake_result([True, False, False, False]), proposals_shown=1)
    assert out.gallery[0][0].shape == (20, 30, 3)


def test_proposal_overlay_dims_outside_tints_inside_and_refuses_a_wrong_size() -> None:
    image = np.full((10, 10, 3), 100, dtype=np.uint8)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 2:8] = True
    drawn = proposal_overlay(image, mask, (255, 0, 0))
    assert drawn[0, 0].tolist() == [45, 45, 45]
    assert drawn[2, 2].tolist() == [255, 0, 0]  # outline
    assert drawn[5, 5].tolist() == [177, 50, 50]  # 0.5 * 100 + 0.5 * tint
    with pytest.raises(ValueError, match="does not match"):
        proposal_overlay(image, mask[:5], (255, 0, 0))


def test_demo_errors_are_shown_to_the_user() -> None:
    failing = ModelService("tiny")
    failing._error = "weights missing: train them first"
    tab = DemoTab(failing, [], proposals_shown=3)
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(gr.Error, match="Upload an image"):
        tab.segment(None, "the star")
    with pytest.raises(gr.Error, match="Type a question"):
        tab.segment(image, "  ")
    with pytest.raises(gr.Error, match="could not be loaded: weights missing"):
        tab.segment(image, "the star")


def test_banner_names_the_preset_and_the_failure() -> None:
    assert "synthetic world" in model_banner(ModelStatus("ready", "shapes", load_seconds=2.0))
    assert "--preset llmseg-official" in model_banner(ModelStatus("not loaded", "shapes"))
    failed = model_banner(ModelStatus("failed", "my-model", "no config.json in my-model"))
    assert "could not be loaded" in failed and "no config.json in my-model" in failed


# the model holder


def test_a_failed_load_is_remembered_and_reported(tmp_path: Path) -> None:
    service = ModelService(str(tmp_path / "missing-model"))
    assert service.status().state == "not loaded"
    with pytest.raises(ModelUnavailable) as first:
        service.segmenter()
    with pytest.raises(ModelUnavailable) as second:
        service.segmenter()
    assert str(first.value) == str(second.value)
    status = service.status()
    assert status.state == "failed" and status.message == str(first.value)


def test_spaces_gpu_wraps_only_when_the_package_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    def work(x: int) -> int:
        return x + 1

    monkeypatch.setitem(sys.modules, "spaces", None)  # import fails, as on a machine without it
    assert on_gpu_when_available(work) is work

    wrapped: list[int] = []

    def gpu(duration: int):
        def decorate(function):
            wrapped.append(duration)
            return lambda *args: function(*args) * 10

        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    on_gpu = on_gpu_when_available(work)
    assert wrapped == [60]
    assert on_gpu(1) == 20


# examples


def test_examples_cover_every_tag_before_repeating_rows_and_start_with_a_target() -> None:
    tags = [["no-target"], ["a"], ["a"], ["b"], ["a", "c"], ["b"], ["d"]]
    assert pick_diverse(tags, 5) == [1, 3, 4, 6, 0]
    assert pick_diverse(tags, 6) == [1, 3, 4, 6, 2, 0]
    assert pick_diverse(tags, 2) == [1, 3]


# the leaderboard tab


def leaderboard_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": pd.array([1, None, 2], dtype="Int64"),
            "model": ["[mine](https://x.org)", "oracle", "other"],
            "gIoU": [80.0, 95.0, 50.0],
            "gIoU CI low": [78.0, 93.0, None],
            "gIoU CI high": [82.5, 97.0, None],
            "cIoU": [81.0, 96.0, 55.0],
            "cIoU CI low": [79.0, 94.0, 50.0],
            "cIoU CI high": [83.0, 98.0, 60.0],
            "gIoU (relation)": [70.0, 90.0, 40.0],
            "cIoU (relation)": [71.0, 91.0, 41.0],
            "n": pd.array([200, 200, 200], dtype="Int64"),
            "submitter": ["me", "leaderboard (baseline)", "you"],
            "date": ["2026-11-01 10:00 UTC"] * 3,
            "baseline": [False, True, False],
            "note": [None, None, "x"],
            "id": pd.array([3, None, 4], dtype="Int64"),
        }
    )


def test_display_table_merges_intervals_labels_baselines_and_hides_groups() -> None:
    shown = display_table(leaderboard_frame(), ["95% CIs", "per-tag gIoU"])
    assert list(shown.columns) == [
        "rank",
        "model",
        "gIoU",
        "gIoU 95% CI",
        "cIoU",
        "cIoU 95% CI",
        "gIoU (relation)",
        "submitter",
        "date",
    ]
    assert shown["rank"].tolist() == ["1", "baseline", "2"]
    assert shown["gIoU 95% CI"].tolist() == ["78.0–82.5", "93.0–97.0", ""]

    everything = display_table(leaderboard_frame(), ["per-tag cIoU", "details (n, note, id)"])
    assert "gIoU 95% CI" not in everything.columns and "gIoU (relation)" not in everything.columns
    assert {"cIoU (relation)", "n", "note", "id"} <= set(everything.columns)


def test_model_names_stay_searchable_as_typed_and_safe_as_markdown() -> None:
    from leaderboard.table import markdown_model

    assert searchable(markdown_model("my-model v1.2 (ft)", "https://x.org")) == "[my-model v1.2 (ft)](https://x.org)"
    assert searchable(markdown_model("a*b_[c]", None)) == r"a\*b\_\[c\]"
    assert searchable(markdown_model(r"odd\-name", None)) == r"odd\\-name"


def test_score_plot_draws_one_point_per_row_and_an_empty_board() -> None:
    plot = leaderboard_frame()[["model", "baseline", "gIoU", "gIoU CI low", "gIoU CI high", "cIoU"]].assign(
        **{"cIoU CI low": [79.0, 94.0, 50.0], "cIoU CI high": [83.0, 98.0, 60.0]}
    )
    axes = score_plot(plot).axes[0]
    assert sorted(text.get_text() for text in axes.texts) == ["[mine](https://x.org)", "oracle", "other"]
    empty = score_plot(plot.iloc[0:0]).axes[0]
    assert [text.get_text() for text in empty.texts] == ["No scored submissions yet"]


def test_score_plot_labels_of_crowded_points_do_not_overlap() -> None:
    from matplotlib.text import Text

    names = ["a-long-model-name", "another-model", "third-model", "fourth", "fifth-model-name"]
    crowded = pd.DataFrame(
        {
            "model": names,
            "baseline": [True, False, False, True, False],
            "gIoU": [3.0, 3.5, 4.0, 2.5, 3.2],
            "cIoU": [3.0, 3.6, 3.9, 2.4, 3.1],
        }
    )
    for metric in ("gIoU", "cIoU"):
        crowded[f"{metric} CI low"] = crowded[metric] - 1
        crowded[f"{metric} CI high"] = crowded[metric] + 1
    figure = score_plot(crowded)
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    boxes = [Text.get_window_extent(text, renderer) for text in axes.texts]
    assert sorted(text.get_text() for text in axes.texts) == sorted(names)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    inside = axes.get_window_extent(renderer)
    assert all(inside.x0 <= box.x0 and box.x1 <= inside.x1 for box in boxes)


class BrokenBoard:
    def benchmark(self, name: str | None = None) -> Benchmark:
        return Benchmark("shapes", "data/shapes-mini-heldout")

    def table(self, show_all: bool = False, **filters) -> pd.DataFrame:
        raise OSError("database is locked")


def test_a_failing_refresh_shows_its_error_instead_of_raising(tmp_path: Path) -> None:
    tab = LeaderboardTab(BrokenBoard(), cache_dir=tmp_path)  # type: ignore[arg-type]
    *_, status = tab.refresh("shapes", False, [])
    assert status == "**Could not build the leaderboard:** OSError: database is locked"


# the submit tab


class RecordingBoard:
    def __init__(self) -> None:
        self.users: list[str] = []

    def submit(self, file: str, *, model_name: str, user: str, link: str | None, note: str | None, **declared):
        self.users.append(user)
        raise SubmissionRejected("line 1 is not JSON")


def test_submitter_is_the_login_on_spaces_and_the_typed_name_locally(tmp_path: Path) -> None:
    file = tmp_path / "p.jsonl"
    file.write_text("x")
    board = RecordingBoard()
    profile = gr.OAuthProfile({"preferred_username": "hf-user", "name": "HF User", "profile": "", "picture": ""})

    local = SubmitTab(board, require_login=False, max_upload_mb=5)  # type: ignore[arg-type]
    message, result = local.submit(str(file), "m", "typed", "", "", None)
    assert result == {"status": "rejected", "error": "line 1 is not JSON"}
    assert "line 1 is not JSON" in message

    on_space = SubmitTab(board, require_login=True, max_upload_mb=5)  # type: ignore[arg-type]
    on_space.submit(str(file), "m", "typed", "", "", profile=profile)
    _, refused = on_space.submit(str(file), "m", "typed", "", "", profile=None)
    assert "sign in with Hugging Face" in refused["error"]
    assert board.users == ["typed", "hf-user"]

    _, no_file = local.submit(None, "m", "typed", "", "", None)
    assert "choose a predictions" in no_file["error"]


def test_display_table_puts_the_declared_protocol_beside_the_scores() -> None:
    frame = leaderboard_frame().assign(
        protocol=["zero-shot", None, "other"],
        checkpoint_selection=["⚠ test", None, "unknown"],
        trained_on=["x", None, None],
        params=["7B", None, None],
        code=["[code](https://x.org)", None, None],
        paper=[None, None, None],
    )
    shown = display_table(frame, ["95% CIs"])
    columns = list(shown.columns)
    assert columns[columns.index("cIoU 95% CI") + 1 : columns.index("cIoU 95% CI") + 3] == ["protocol", "checkpoint"]
    assert "trained on" not in columns and "code" not in columns  # their group is not chosen
    assert shown["checkpoint"].tolist()[0] == "⚠ test"
    with_training = display_table(frame, ["training (data, params, code, paper)"])
    assert {"trained on", "params", "code", "paper"} <= set(with_training.columns)
    types = dict(zip(with_training.columns, datatypes(with_training), strict=True))
    assert (types["model"], types["code"], types["paper"], types["protocol"]) == (
        "markdown",
        "markdown",
        "markdown",
        "str",
    )


def test_the_benchmarks_flag_reaches_the_leaderboard_and_excludes_data() -> None:
    settings = settings_from_args(["--benchmarks", "leaderboard/benchmarks.example.json"])
    assert settings.leaderboard_overrides == {"benchmarks_file": "leaderboard/benchmarks.example.json"}
    with pytest.raises(ValueError, match="give --benchmarks or --data/--split, not both"):
        settings_from_args(["--benchmarks", "b.json", "--data", "data/x"])
