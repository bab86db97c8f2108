"""Paired significance (``compare``) and the per-sample download policy.

The comparisons are checked against a paired bootstrap and a sign-flip permutation test written
here with plain loops, on per-sample counts computed by ``eval.evaluate`` (not the store).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, read_predictions
from eval.metrics import bootstrap_ci95, ciou, giou
from leaderboard import Leaderboard, LeaderboardSettings, Refused
from leaderboard.__main__ import main
from leaderboard.significance import SampleCounts, compare

pytest_plugins = ["test_leaderboard_support"]

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "data" / "shapes-mini-heldout"


# an independent computation


def reference_comparison(a: SampleCounts, b: SampleCounts, n_resamples: int, seed: int) -> dict:
    """The paired bootstrap interval and sign-flip p-value, one resample at a time."""
    n = len(a)
    rng = np.random.default_rng(seed)
    giou_draws, ciou_draws = [], []
    for _ in range(n_resamples):
        index = rng.integers(0, n, size=n)  # the same samples for both submissions
        giou_draws.append(giou(a.intersection[index], a.union[index]) - giou(b.intersection[index], b.union[index]))
        ciou_draws.append(ciou(a.intersection[index], a.union[index]) - ciou(b.intersection[index], b.union[index]))
    observed_giou = giou(a.intersection, a.union) - giou(b.intersection, b.union)
    observed_ciou = ciou(a.intersection, a.union) - ciou(b.intersection, b.union)
    rng = np.random.default_rng((seed, 1))
    extreme_giou = extreme_ciou = 0
    for _ in range(n_resamples):
        words = rng.integers(0, 2**64, size=-(-n // 64), dtype=np.uint64)
        swap = np.array([(int(words[i // 64]) >> (i % 64)) & 1 == 1 for i in range(n)])
        ia, ua = np.where(swap, b.intersection, a.intersection), np.where(swap, b.union, a.union)
        ib, ub = np.where(swap, a.intersection, b.intersection), np.where(swap, a.union, b.union)
        extreme_giou += abs(giou(ia, ua) - giou(ib, ub)) >= abs(observed_giou) - 1e-12
        extreme_ciou += abs(ciou(ia, ua) - ciou(ib, ub)) >= abs(observed_ciou) - 1e-12
    return {
        "giou_diff": observed_giou,
        "giou_ci95": list(np.percentile(giou_draws, [2.5, 97.5])),
        "giou_p": (1 + extreme_giou) / (1 + n_resamples),
        "ciou_diff": observed_ciou,
        "ciou_ci95": list(np.percentile(ciou_draws, [2.5, 97.5])),
        "ciou_p": (1 + extreme_ciou) / (1 + n_resamples),
    }


def assert_matches_reference(result: dict, a: SampleCounts, b: SampleCounts, tags, n_resamples: int, seed: int):
    expected = reference_comparison(a, b, n_resamples, seed)
    for metric in ("giou", "ciou"):
        assert result[f"{metric}_diff"] == pytest.approx(expected[f"{metric}_diff"], abs=1e-12)
        assert result[f"{metric}_ci95"] == pytest.approx(expected[f"{metric}_ci95"], abs=1e-9)
        assert result[f"{metric}_p"] == expected[f"{metric}_p"]
    for tag, row in result["by_tag"].items():
        rows = np.array([tag in sample_tags for sample_tags in tags])
        expected = reference_comparison(a.subset(rows), b.subset(rows), n_resamples, seed)
        assert row["n"] == rows.sum()
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-9), (tag, key)


def counts_of(path: Path, references: References) -> SampleCounts:
    per_sample = evaluate(read_predictions(path), references, n_bootstrap=0).per_sample
    return SampleCounts(per_sample["intersection"].to_numpy(), per_sample["union"].to_numpy())


@pytest.fixture
def two(board, truth, tmp_path) -> tuple[Leaderboard, list[Path], list[int]]:
    """Two submissions by different users: a good one (shifted 1 px) and a worse one (shifted 3 px)."""
    paths = [predictions_file(tmp_path / f"p{k}.jsonl", shifted(truth, k)) for k in (1, 3)]
    ids = [
        board.submit(paths[0], model_name="good", user="ann").id,
        board.submit(paths[1], model_name="worse", user="ben").id,
    ]
    return board, paths, ids


# the statistics


def test_compare_matches_an_independent_paired_bootstrap_and_permutation_test(two):
    board, paths, ids = two
    references = References.from_data(board.settings.data, "test")
    result = board.compare(ids[0], ids[1], n_resamples=300, seed=7)
    a, b = counts_of(paths[0], references), counts_of(paths[1], references)
    assert_matches_reference(result, a, b, references.tags, 300, 7)
    assert result["giou_diff"] > 0 and set(result["by_tag"]) == {"long", "short", "no-target"}
    assert (result["a"]["ref"], result["b"]["ref"], result["benchmark"]) == (
        str(ids[0]),
        str(ids[1]),
        board.default_benchmark,
    )


def test_a_submission_against_itself_differs_by_exactly_zero_with_p_one(two):
    board, _, ids = two
    result = board.compare(ids[0], f"#{ids[0]}")
    for row in [result, *result["by_tag"].values()]:
        assert (row["giou_diff"], row["giou_ci95"], row["giou_p"]) == (0.0, [0.0, 0.0], 1.0)
        assert (row["ciou_diff"], row["ciou_ci95"], row["ciou_p"]) == (0.0, [0.0, 0.0], 1.0)


def test_the_oracle_baseline_beats_the_empty_baseline_with_p_below_0_001(tmp_path):
    """On the shipped held-out split (200 questions) and its shipped baseline files."""
    board = Leaderboard(LeaderboardSettings.from_env({}, db_path=tmp_path / "lb.sqlite", data=str(HELDOUT)))
    result = board.compare("baseline:oracle-best-instance", "baseline:empty", n_resamples=1000, seed=0)
    assert result["giou_p"] < 0.001 and result["ciou_p"] < 0.001
    assert result["giou_ci95"][0] > 0 and result["ciou_ci95"][0] > 0
    references = References.from_data(str(HELDOUT), "test")
    baselines = HELDOUT / "baselines"
    oracle, empty = (
        counts_of(baselines / "oracle-best-instance.jsonl", references),
        counts_of(baselines / "empty.jsonl", references),
    )
    expected = reference_comparison(oracle, empty, 1000, 0)
    for metric in ("giou", "ciou"):
        assert result[f"{metric}_p"] == expected[f"{metric}_p"]
        assert result[f"{metric}_ci95"] == pytest.approx(expected[f"{metric}_ci95"], abs=1e-9)
    # Both baselines score 1 on every no-target question: no difference there, and no evidence of one.
    assert result["by_tag"]["no-target"]["giou_diff"] == 0.0 and result["by_tag"]["no-target"]["giou_p"] == 1.0


def test_intervals_and_p_values_are_reproducible_with_a_seed(two):
    board, _, ids = two
    first = board.compare(ids[0], ids[1], n_resamples=200, seed=3)
    assert board.compare(ids[0], ids[1], n_resamples=200, seed=3) == first
    other = board.compare(ids[0], ids[1], n_resamples=200, seed=4)
    assert other["giou_diff"] == first["giou_diff"] and other["giou_ci95"] != first["giou_ci95"]


def test_swapping_the_sides_negates_the_difference_and_keeps_the_p_value(two):
    board, _, ids = two
    forward, backward = board.compare(ids[0], ids[1], seed=1), board.compare(ids[1], ids[0], seed=1)
    assert backward["giou_diff"] == pytest.approx(-forward["giou_diff"], abs=1e-15)
    assert backward["giou_p"] == forward["giou_p"] and backward["ciou_p"] == forward["ciou_p"]


def test_only_aggregates_come_out(two):
    board, _, ids = two
    result = board.compare(ids[0], "baseline:oracle")

    def lists(value):
        if isinstance(value, dict):
            return [item for child in value.values() for item in lists(child)]
        return [value] if isinstance(value, list) else []

    assert lists(result) and all(len(value) == 2 for value in lists(result))  # intervals only, no per-sample arrays
    assert {"giou_diff", "giou_ci95", "giou_p", "ciou_diff", "ciou_ci95", "ciou_p", "by_tag"} <= set(result)


def test_the_paired_resamples_are_those_behind_each_rows_own_interval():
    """Against a B that scores 1 on every sample (both masks empty), each resample's difference is
    A's score minus 1, so the interval is A's own bootstrap interval (the table's) minus 1."""
    rng = np.random.default_rng(0)
    union = rng.integers(1, 500, size=57)
    a = SampleCounts(rng.integers(0, union + 1), union)
    perfect = SampleCounts(np.zeros(57, np.int64), np.zeros(57, np.int64))
    result = compare(a, perfect, [[]] * 57, n_resamples=400, seed=11)
    own = bootstrap_ci95(a.intersection, a.union, n_resamples=400, seed=11)
    for metric in ("giou", "ciou"):
        assert result[f"{metric}_ci95"] == pytest.approx([bound - 1 for bound in own[metric]], abs=1e-12)


def test_bad_resample_counts_and_mismatched_lengths_are_refused():
    counts = SampleCounts(np.array([1, 2]), np.array([2, 2]))
    with pytest.raises(ValueError, match="resamples must be an integer from 1 to"):
        compare(counts, counts, [[], []], n_resamples=0)
    with pytest.raises(ValueError, match="one entry per sample"):
        compare(counts, SampleCounts(np.array([1]), np.array([1])), [[], []])


# storage and backfill


def test_per_sample_counts_are_stored_and_backfilled_from_the_raw_file(two, lb_settings):
    board, paths, ids = two
    before = board.compare(ids[0], ids[1])
    with sqlite3.connect(lb_settings.db_path) as connection:  # as a database written before the table existed
        assert connection.execute("SELECT COUNT(*) FROM per_sample").fetchone()[0] == 2
        assert connection.execute("SELECT COUNT(*) FROM baseline_per_sample").fetchone()[0] == 2
        connection.execute("DELETE FROM per_sample")
        connection.execute("DELETE FROM baseline_per_sample")
    reopened = Leaderboard(lb_settings)
    assert reopened.compare(ids[0], ids[1]) == before
    assert reopened.compare(ids[0], "baseline:empty")["giou_diff"] > 0
    with sqlite3.connect(lb_settings.db_path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM per_sample").fetchone()[0] == 2
        assert connection.execute("SELECT COUNT(*) FROM baseline_per_sample").fetchone()[0] == 1


# refusals, in the library and on the command line


@pytest.fixture
def two_benchmarks(tmp_path, truth) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A benchmarks file: ``alpha`` (the test truth) and ``beta`` (private per-sample), and a db path."""
    beta_truth = {f"b{i}": m for i, m in enumerate(make_masks(5, seed=9).values())}
    alpha, beta = write_split(tmp_path, truth, name="alpha"), write_split(tmp_path, beta_truth, name="beta")
    path = tmp_path / "benchmarks.json"
    path.write_text(
        json.dumps(
            {
                "benchmarks": [
                    {"name": "alpha", "data": str(alpha)},
                    {"name": "beta", "data": str(beta), "private_per_sample": True},
                ]
            }
        )
    )
    return path, tmp_path / "multi" / "lb.sqlite", beta_truth


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """Exit code, stdout, and stderr's last line (``datasets`` may draw a progress bar above it)."""
    code = main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, (captured.err.splitlines() or [""])[-1]


def test_refusals_are_one_sentence_with_exit_code_2(two_benchmarks, truth, tmp_path, capsys):
    benchmarks, db, beta_truth = two_benchmarks
    where = ["--benchmarks", str(benchmarks), "--db", str(db)]
    board = Leaderboard(LeaderboardSettings.from_env({}, db_path=db, benchmarks_file=benchmarks))
    alpha_id = board.submit(predictions_file(tmp_path / "a.jsonl", truth), model_name="a", user="ann").id
    beta_id = board.submit(
        predictions_file(tmp_path / "b.jsonl", beta_truth), model_name="b", user="ann", benchmark="beta"
    ).id
    refused = {
        (str(alpha_id), "999"): "there is no submission #999: use a number from the table's id column",
        (str(alpha_id), str(beta_id)): f"submission #{alpha_id} is on benchmark alpha and #{beta_id} on beta: "
        "compare two submissions of one benchmark",
        (str(alpha_id), "baseline:nope"): "there is no baseline 'nope' on benchmark alpha: its baselines are none",
        (
            "first",
            str(alpha_id),
        ): "'first' is not a submission id: give the number from the table's id column or baseline:NAME",
    }
    for (a, b), sentence in refused.items():
        with pytest.raises(Refused, match="^" + sentence.replace("(", r"\(").replace(")", r"\)") + "$"):
            board.compare(a, b)
        code, out, err = _cli(capsys, "compare", a, b, *where)
        assert (code, out, err) == (2, "", f"error: {sentence}")
        code, out, _ = _cli(capsys, "compare", a, b, *where, "--json")
        assert code == 2 and json.loads(out) == {"status": "refused", "error": sentence}
    code, _, err = _cli(capsys, "compare", str(alpha_id), str(alpha_id), *where, "--benchmark", "beta")
    mismatch = f"submission #{alpha_id} is on benchmark alpha, not beta: compare submissions of the benchmark you name"
    assert (code, err) == (2, f"error: {mismatch}")
    code, _, err = _cli(capsys, "compare", str(alpha_id), str(alpha_id), *where, "--resamples", "0")
    assert code == 2 and err.startswith("error: the number of resamples must be an integer from 1 to")
    code, out, _ = _cli(capsys, "compare", str(alpha_id), str(alpha_id), *where, "--json", "--seed", "5")
    answer = json.loads(out)
    assert code == 0 and (answer["giou_diff"], answer["giou_p"], answer["seed"]) == (0.0, 1.0, 5)
    code, out, _ = _cli(capsys, "compare", str(alpha_id), str(alpha_id), *where)
    assert code == 0 and out.splitlines()[0].startswith(f"A: #{alpha_id} a (ann)") and "overall" in out


# per-sample download policy


def test_a_submitter_downloads_their_own_per_sample_iou_and_nobody_elses(two, lb_settings):
    board, paths, ids = two
    frame = board.per_sample(ids[0], user=" ann ")
    references = References.from_data(lb_settings.data, "test")
    expected = evaluate(read_predictions(paths[0]), references, n_bootstrap=0).per_sample
    assert list(frame.columns) == ["id", "tags", "iou"]
    assert frame["id"].tolist() == expected["id"].tolist() and frame["tags"].tolist() == expected["tags"].tolist()
    assert np.array_equal(frame["iou"].to_numpy(), expected["iou"].to_numpy())
    with pytest.raises(
        Refused,
        match=rf"^submission #{ids[0]} is not yours: you can download the per-sample results of your own submissions",
    ):
        board.per_sample(ids[0], user="ben")
    with pytest.raises(Refused, match="^baselines have no submitter"):
        board.per_sample("baseline:oracle", user="ann")
    with pytest.raises(Refused, match="^there is no submission #77"):
        board.per_sample(77, user="ann")


def test_per_sample_download_is_refused_on_a_private_benchmark(two_benchmarks, tmp_path, capsys):
    benchmarks, db, beta_truth = two_benchmarks
    board = Leaderboard(LeaderboardSettings.from_env({}, db_path=db, benchmarks_file=benchmarks))
    beta_id = board.submit(
        predictions_file(tmp_path / "b.jsonl", shifted(beta_truth, 1)), model_name="b", user="cat", benchmark="beta"
    ).id
    sentence = (
        "benchmark beta keeps per-sample results private: "
        "per-sample scores over many submissions would leak its ground truth"
    )
    with pytest.raises(Refused, match=f"^{sentence}$"):
        board.per_sample(beta_id, user="cat")
    where = ["--benchmarks", str(benchmarks), "--db", str(db)]
    out_file = tmp_path / "mine.csv"
    assert _cli(capsys, "per-sample", str(beta_id), "--user", "cat", "--out", str(out_file), *where) == (
        2,
        "",
        f"error: {sentence}",
    )
    assert not out_file.exists()
    assert board.compare(beta_id, beta_id)["giou_p"] == 1.0  # aggregates stay available on a private benchmark


def test_per_sample_cli_writes_the_csv_for_its_owner_only(two, lb_settings, capsys, tmp_path):
    board, _, ids = two
    where = ["--db", str(lb_settings.db_path), "--data", lb_settings.data]
    out_file = tmp_path / "out" / "mine.csv"
    code, out, _ = _cli(capsys, "per-sample", str(ids[1]), "--user", "ben", "--out", str(out_file), *where)
    assert code == 0 and out.startswith(f"wrote the per-sample IoU of submission #{ids[1]}")
    pd.testing.assert_frame_equal(
        pd.read_csv(out_file, keep_default_na=False), board.per_sample(ids[1], user="ben"), check_dtype=False
    )
    code, _, err = _cli(capsys, "per-sample", str(ids[1]), "--user", "ann", "--out", str(tmp_path / "x.csv"), *where)
    assert code == 2 and "is not yours" in err and not (tmp_path / "x.csv").exists()
