"""The compare view and per-sample download in-process: what they show, and whose results they give."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
from test_leaderboard_support import predictions_file, shifted

from llmseg_app.compare_view import CompareView, comparison_frame, headline

pytest_plugins = ["test_leaderboard_support"]

PROFILE = {"preferred_username": "hf-ann", "name": "Ann", "profile": "", "picture": ""}


def test_the_comparison_is_shown_as_a_headline_and_one_row_per_subset(board, truth, tmp_path: Path) -> None:
    first = board.submit(predictions_file(tmp_path / "a.jsonl", shifted(truth, 1)), model_name="good", user="ann")
    view = CompareView(board, cache_dir=tmp_path, require_login=False)
    message, frame, result = view.show_comparison(str(first.id), "baseline:empty")
    assert message == headline(result)
    assert message.startswith(f"**A** #{first.id} good (ann) − **B** baseline empty on **{board.default_benchmark}**")
    table = comparison_frame(result)
    assert table["subset"].tolist() == ["overall", *result["by_tag"]]
    assert table.loc[0, "Δ gIoU"] == f"{100 * result['giou_diff']:+.1f}"
    assert frame.visible is True
    refused, hidden, nothing = view.show_comparison(str(first.id), "404")
    assert refused == "**Not compared:** there is no submission #404: use a number from the table's id column"
    assert hidden.visible is False and nothing is None
    a, b = view.choices()
    assert (a.value, b.value) == (str(first.id), "baseline:empty")


def test_the_download_is_ones_own_the_login_decides_on_a_space(board, truth, tmp_path: Path) -> None:
    mine = board.submit(predictions_file(tmp_path / "a.jsonl", truth), model_name="m", user="hf-ann")
    theirs = board.submit(predictions_file(tmp_path / "b.jsonl", shifted(truth, 2)), model_name="m", user="ben")
    on_space = CompareView(board, cache_dir=tmp_path / "cache", require_login=True)
    profile = gr.OAuthProfile(PROFILE)

    button, message = on_space.download(str(mine.id), "ben", profile)  # a typed name does not count on a Space
    frame = pd.read_csv(button.value["path"], keep_default_na=False)
    pd.testing.assert_frame_equal(frame, board.per_sample(mine.id, user="hf-ann"), check_dtype=False)
    assert message == f"Per-sample IoU of submission {mine.id}: {len(frame)} questions."

    button, message = on_space.download(str(theirs.id), "ben", profile)
    assert button.visible is False and f"submission #{theirs.id} is not yours" in message
    button, message = on_space.download(str(mine.id), "hf-ann", None)
    assert button.visible is False and "sign in with Hugging Face first" in message

    local = CompareView(board, cache_dir=tmp_path / "cache", require_login=False)
    button, _ = local.download(str(theirs.id), "ben", None)
    assert button.visible is True
