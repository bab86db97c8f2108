"""The tables: ranking, best per model, baselines, links, CSV export, plot data, published numbers,
and that no public method or attribute hands out the ground truth."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
from test_leaderboard_support import predictions_file, shifted

from eval import References
from leaderboard import REPORTED_LABEL, Leaderboard
from leaderboard.table import Entry, markdown_model, tag_names

pytest_plugins = ["test_leaderboard_support"]


@pytest.fixture
def filled(board, truth, tmp_path) -> Leaderboard:
    """Three submitters; 'multi' submits twice under one model name, the second time better."""
    submissions = [
        (shifted(truth, 4), "multi", "ann", None),
        (shifted(truth, 1), "multi", "ann", None),
        (shifted(truth, 2), "linked [v2]", "ben", "https://example.org/paper_(1)"),
        (shifted(truth, 6), "weak", "cat", None),
    ]
    for k, (masks, model, user, link) in enumerate(submissions):
        board.submit(predictions_file(tmp_path / f"p{k}.jsonl", masks), model_name=model, user=user, link=link)
    return board


def test_table_ranks_by_giou_and_keeps_the_best_submission_per_model(filled):
    table = filled.table()
    submissions = table[~table["baseline"]]
    assert submissions["gIoU"].tolist() == sorted(submissions["gIoU"], reverse=True)
    assert submissions["rank"].tolist() == list(range(1, len(submissions) + 1))
    assert submissions["model"].str.contains("multi").sum() == 1
    everything = filled.table(show_all=True)
    assert everything["model"].str.contains("multi").sum() == 2
    best_multi = everything[everything["model"] == "multi"]["gIoU"].max()
    assert submissions[submissions["model"] == "multi"]["gIoU"].item() == best_multi


def test_baselines_are_marked_and_unranked(filled):
    table = filled.table()
    baselines = table[table["baseline"]]
    assert sorted(baselines["model"]) == ["empty", "oracle"]
    assert baselines["rank"].isna().all()
    assert table.iloc[0]["model"] == "oracle"  # a perfect score sits on top, without taking rank 1
    assert table[~table["baseline"]]["rank"].iloc[0] == 1


def test_table_columns_hold_scores_intervals_tags_and_who_when(filled):
    table = filled.table()
    for column in [
        "rank",
        "model",
        "gIoU",
        "cIoU",
        "gIoU CI low",
        "gIoU CI high",
        "cIoU CI low",
        "cIoU CI high",
        "gIoU (long)",
        "cIoU (short)",
        "gIoU (no-target)",
        "submitter",
        "date",
        "baseline",
    ]:
        assert column in table.columns, column
    rows = table[~table["baseline"]]
    assert (rows["gIoU CI low"] <= rows["gIoU"]).all() and (rows["gIoU"] <= rows["gIoU CI high"]).all()
    assert set(rows["submitter"]) == {"ann", "ben", "cat"}
    assert rows["date"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC").all()


def test_tag_columns_put_the_splits_own_tags_between_query_and_answer_tags():
    by_tag = {tag: {} for tag in ["no-target", "relation", "long", "attribute", "multi-target"]}
    entries = [Entry(model="m", scores={"by_tag": by_tag}, at=0.0, submitter="s")]
    assert tag_names(entries) == ["long", "attribute", "relation", "multi-target", "no-target"]


def test_model_links_are_markdown_with_escaped_names():
    assert markdown_model("plain", None) == "plain"
    assert markdown_model("a [b]_c", "https://x.org/p_(1)") == r"[a \[b\]\_c](https://x.org/p_%281%29)"


def test_linked_model_appears_as_markdown_and_csv_keeps_it_plain(filled, tmp_path):
    assert r"[linked \[v2\]](https://example.org/paper_%281%29)" in filled.table()["model"].tolist()
    plain = filled.table(markdown=False)
    assert plain.loc[plain["model"] == "linked [v2]", "link"].item() == "https://example.org/paper_(1)"
    path = filled.to_csv(tmp_path / "out" / "board.csv", show_all=True)
    csv = pd.read_csv(path)
    assert "linked [v2]" in csv["model"].tolist()
    assert csv.loc[csv["model"] == "linked [v2]", "link"].item() == "https://example.org/paper_(1)"
    assert len(csv) == len(filled.table(show_all=True))


def test_plot_data_has_one_point_per_table_row_with_intervals(filled):
    plot = filled.plot_data()
    table = filled.table()
    assert len(plot) == len(table)
    for metric in ("gIoU", "cIoU"):
        assert (
            (plot[f"{metric} CI low"] <= plot[metric] + 1e-9) & (plot[metric] <= plot[f"{metric} CI high"] + 1e-9)
        ).all()
    assert np.allclose(plot["gIoU"].round(1), table["gIoU"])


def test_reported_table_is_labelled_with_sources_and_exports(board, tmp_path):
    reported = board.reported_table()
    assert (reported["status"] == REPORTED_LABEL).all()
    assert reported["source"].str.contains("arXiv:").all()
    assert reported["method"].is_unique
    values = reported[["val gIoU", "val cIoU", "test gIoU", "test cIoU"]].to_numpy(dtype=float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 100
    assert "LLM-Seg, 20 ep" in reported["method"].tolist()
    exported = pd.read_csv(board.reported_to_csv(tmp_path / "reported.csv"))
    assert exported.shape == reported.shape


def _contains_ground_truth(value: object, depth: int = 0) -> bool:
    """True when ``value`` is, or holds, a References object, a mask array or an RLE dict."""
    if depth > 6:
        return False
    if isinstance(value, (References, np.ndarray)):
        return True
    if isinstance(value, dict):
        if "counts" in value:
            return True
        return any(_contains_ground_truth(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(_contains_ground_truth(v, depth + 1) for v in value)
    if isinstance(value, pd.DataFrame):
        cells = value.to_numpy(dtype=object).ravel().tolist()
        return any(_contains_ground_truth(v, depth + 1) for v in cells) or any(
            isinstance(v, str) and '"counts"' in v for v in cells
        )
    if hasattr(value, "__dict__") and not inspect.ismodule(value) and not isinstance(value, type):
        public = {k: v for k, v in vars(value).items() if not k.startswith("_")}
        return _contains_ground_truth(public, depth + 1)
    return False


def test_no_public_method_or_attribute_returns_the_ground_truth(filled, truth, tmp_path):
    references = References.from_data(filled.settings.data, filled.settings.split)
    assert _contains_ground_truth(references) and _contains_ground_truth({"x": [{"counts": "a", "size": [1, 1]}]})
    public = [name for name in dir(filled) if not name.startswith("_")]
    assert public, "the board has a public API to check"
    for name in public:
        member = getattr(filled, name)
        if not callable(member):
            assert not _contains_ground_truth(member), name
            continue
        required = [
            p
            for p in inspect.signature(member).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if name in ("to_csv", "reported_to_csv"):
            written = member(tmp_path / f"{name}.csv")
            assert '"counts"' not in written.read_text(), name
        elif not required:
            assert not _contains_ground_truth(member()), name
    result = filled.submit(predictions_file(tmp_path / "own.jsonl", truth), model_name="oracle-copy", user="dan")
    assert not _contains_ground_truth(result)
    assert not _contains_ground_truth(result.to_dict())
    assert [name for name in vars(filled) if not name.startswith("_")] == ["settings", "benchmarks"]
