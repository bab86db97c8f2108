"""Several benchmarks in one leaderboard: the benchmarks file, one store for all, and the
migration of a version-1 (single-benchmark) database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_leaderboard_support import make_masks, predictions_file, shifted, write_split

from eval import References, evaluate, read_predictions
from leaderboard import Leaderboard, LeaderboardSettings, SubmissionRejected
from leaderboard.__main__ import main
from leaderboard.benchmarks import DEFAULT_BENCHMARKS_FILE, Benchmark, load_benchmarks
from leaderboard.scoring import Scorer
from leaderboard.settings import implicit_benchmark_name
from leaderboard.store import SCHEMA_VERSION

pytest_plugins = ["test_leaderboard_support"]

ROOT = Path(__file__).resolve().parents[1]


def _write_benchmarks(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"benchmarks": entries}))
    return path


@pytest.fixture(scope="module")
def two_splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, np.ndarray]]]:
    """Two held-out splits with different ids and masks; each with its own baselines folder."""
    parent = tmp_path_factory.mktemp("two")
    alpha_truth = make_masks(seed=3)
    beta_truth = {f"b{i}": mask for i, mask in enumerate(make_masks(6, seed=4).values())}
    alpha = write_split(parent, alpha_truth, name="alpha")
    beta = write_split(parent, beta_truth, name="beta")
    (alpha / "baselines").mkdir()
    predictions_file(alpha / "baselines" / "empty.jsonl", {i: np.zeros_like(m) for i, m in alpha_truth.items()})
    predictions_file(alpha / "baselines" / "oracle.jsonl", alpha_truth)
    beta_baselines = parent / "beta-baselines"
    beta_baselines.mkdir()
    predictions_file(beta_baselines / "shifted.jsonl", shifted(beta_truth, 1))
    return {"alpha": (alpha, alpha_truth), "beta": (beta, beta_truth), "beta_baselines": (beta_baselines, {})}


@pytest.fixture
def two_benchmarks(tmp_path: Path, two_splits) -> Path:
    return _write_benchmarks(
        tmp_path / "benchmarks.json",
        [
            {"name": "alpha", "data": str(two_splits["alpha"][0]), "description": "the first split"},
            {
                "name": "beta",
                "data": str(two_splits["beta"][0]),
                "split": "test",
                "baselines": str(two_splits["beta_baselines"][0]),
                "private_per_sample": True,
            },
        ],
    )


def _settings(tmp_path: Path, benchmarks: Path, **overrides) -> LeaderboardSettings:
    return LeaderboardSettings.from_env(
        {}, db_path=tmp_path / "lb" / "lb.sqlite", benchmarks_file=benchmarks, **overrides
    )


# the file


def test_the_shipped_default_and_example_files_parse():
    (shapes,) = load_benchmarks(DEFAULT_BENCHMARKS_FILE)
    assert (shapes.name, shapes.data, shapes.split, shapes.private_per_sample) == (
        "shapes",
        "data/shapes-mini-heldout",
        "test",
        False,
    )
    assert shapes.name == implicit_benchmark_name(LeaderboardSettings().data)  # same rows with or without the file
    example = {b.name: b for b in load_benchmarks(ROOT / "leaderboard" / "benchmarks.example.json")}
    assert list(example) == ["shapes", "llmseg40k-test", "reasonseg-val", "reasonseg-test"]
    assert example["llmseg40k-test"].private_per_sample is True
    assert not example["reasonseg-val"].private_per_sample and not example["reasonseg-test"].private_per_sample
    assert (example["reasonseg-val"].split, example["reasonseg-test"].split) == ("validation", "test")


def test_yaml_gives_the_same_benchmarks_as_json(tmp_path):
    (tmp_path / "b.yaml").write_text(
        "benchmarks:\n"
        "  - name: reasonseg-val\n    data: data/reasonseg\n    split: validation\n"
        "  - name: hub\n    data: org/hidden\n    private_per_sample: true\n    baselines: b/\n"
    )
    assert load_benchmarks(tmp_path / "b.yaml") == (
        Benchmark("reasonseg-val", "data/reasonseg", "validation"),
        Benchmark("hub", "org/hidden", "test", baselines_dir=Path("b"), private_per_sample=True),
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", 'must be an object whose "benchmarks" key lists'),
        ('{"benchmarks": []}', "list is empty: list at least one benchmark"),
        ('{"benchmarks": [{"name": "a"}]}', r"benchmark 1 \('a'\) has no \"data\""),
        ('{"benchmarks": [{"name": "A B", "data": "x"}]}', "is not a short lowercase id"),
        ('{"benchmarks": [{"name": "a", "data": "x"}, {"name": "a", "data": "y"}]}', "appears twice"),
        ('{"benchmarks": [{"name": "a", "data": "x", "private_per_sample": "yes"}]}', "use true or false"),
        ('{"benchmarks": [{"name": "a", "data": "x", "colour": 1}]}', r"unknown key\(s\) colour: the keys are"),
        ('{"benchmarks": [{"name": "a", "data": "x", "split": 3}]}', '"split" that is not a string'),
        ('{"benchmarks": ["a"]}', "benchmark 1 is not an object"),
        ('{"benchmarks": [{"name": "a", "data": "x"}], "default": "a"}', "unknown top-level key"),
        ('{"benchmarks": [', "is not valid JSON"),
    ],
)
def test_a_bad_benchmarks_file_is_one_sentence_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as error:
        load_benchmarks(path)
    assert "bad.json" in str(error.value) and "\n" not in str(error.value)


def test_missing_bad_yaml_and_wrong_suffix_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no benchmarks file at"):
        load_benchmarks(tmp_path / "missing.json")
    (tmp_path / "b.yaml").write_text("benchmarks: [\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_benchmarks(tmp_path / "b.yaml")
    (tmp_path / "b.toml").write_text("")
    with pytest.raises(ValueError, match="neither .json nor .yaml"):
        load_benchmarks(tmp_path / "b.toml")


def test_the_environment_variable_names_the_file(tmp_path, two_benchmarks):
    settings = LeaderboardSettings.from_env({"LLMSEG_LEADERBOARD_BENCHMARKS": str(two_benchmarks)})
    assert [b.name for b in settings.benchmarks()] == ["alpha", "beta"]


def test_the_cli_refuses_a_bad_file_with_exit_code_2_and_one_sentence(tmp_path, capsys):
    bad = _write_benchmarks(tmp_path / "bad.json", [{"name": "x"}])
    args = ["show", "--db", str(tmp_path / "lb.sqlite"), "--benchmarks", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and 'has no "data"' in err and err.count("\n") == 1
    assert main(["benchmarks", "--benchmarks", str(tmp_path / "none.json")]) == 2
    assert "no benchmarks file" in capsys.readouterr().err
    assert main(["show", "--benchmarks", str(bad), "--data", "x"]) == 2
    assert "not both" in capsys.readouterr().err


# one store, two benchmarks


def test_two_benchmarks_keep_their_own_submissions_baselines_tables_and_csv(tmp_path, two_splits, two_benchmarks):
    board = Leaderboard(_settings(tmp_path, two_benchmarks))
    alpha_truth, beta_truth = two_splits["alpha"][1], two_splits["beta"][1]
    assert board.default_benchmark == "alpha"
    on_alpha = board.submit(predictions_file(tmp_path / "a.jsonl", shifted(alpha_truth, 1)), model_name="m", user="u")
    on_beta = board.submit(
        predictions_file(tmp_path / "b.jsonl", shifted(beta_truth, 2)), model_name="m", user="u", benchmark="beta"
    )
    assert (on_alpha.benchmark, on_beta.benchmark) == ("alpha", "beta")
    assert (on_alpha.rank, on_beta.rank) == (1, 1)  # ranked within their own benchmark
    expected = evaluate(
        read_predictions(tmp_path / "b.jsonl"), References.from_data(str(two_splits["beta"][0]), "test")
    )
    assert on_beta.giou == expected.giou and on_beta.n == 6

    alpha, beta = board.table(markdown=False), board.table(markdown=False, benchmark="beta")
    assert alpha[~alpha["baseline"]]["id"].tolist() == [on_alpha.id]
    assert beta[~beta["baseline"]]["id"].tolist() == [on_beta.id]
    assert sorted(alpha[alpha["baseline"]]["model"]) == ["empty", "oracle"]
    assert beta[beta["baseline"]]["model"].tolist() == ["shifted"]  # the benchmark's own baselines folder
    assert beta[~beta["baseline"]]["n"].tolist() == [6]
    assert set(board.plot_data(benchmark="beta")["model"]) == {"m", "shifted"}

    board.to_csv(tmp_path / "beta.csv", benchmark="beta")
    board.to_csv(tmp_path / "alpha.csv")
    assert pd.read_csv(tmp_path / "beta.csv")["model"].tolist() == beta["model"].tolist()
    assert pd.read_csv(tmp_path / "alpha.csv")["model"].tolist() == alpha["model"].tolist()

    board.submit(
        predictions_file(tmp_path / "b2.jsonl", shifted(beta_truth, 3)),
        model_name="zero",
        user="v",
        benchmark="beta",
        protocol="zero-shot",
    )
    zero_on_beta = board.table(markdown=False, benchmark="beta", protocols=["zero-shot"])
    assert zero_on_beta[~zero_on_beta["baseline"]]["model"].tolist() == ["zero"]
    zero_on_alpha = board.table(markdown=False, protocols=["zero-shot"])
    assert zero_on_alpha["baseline"].all()  # the filter applies to the benchmark shown, nothing leaks across
    board.to_csv(tmp_path / "beta-zero.csv", benchmark="beta", protocols=["zero-shot"])
    assert pd.read_csv(tmp_path / "beta-zero.csv")["model"].tolist() == zero_on_beta["model"].tolist()
    beta = board.table(markdown=False, benchmark="beta")

    reopened = Leaderboard(_settings(tmp_path, two_benchmarks))  # cached baselines and rows survive a restart
    pd.testing.assert_frame_equal(reopened.table(markdown=False, benchmark="beta"), beta)


def test_a_file_for_one_benchmark_is_rejected_on_the_other(tmp_path, two_splits, two_benchmarks):
    board = Leaderboard(_settings(tmp_path, two_benchmarks))
    path = predictions_file(tmp_path / "a.jsonl", two_splits["alpha"][1])
    with pytest.raises(SubmissionRejected, match="are not in the split"):
        board.submit(path, model_name="m", user="u", benchmark="beta")
    with pytest.raises(SubmissionRejected, match="there is no benchmark 'gamma' on this leaderboard: choose one of"):
        board.submit(path, model_name="m", user="u", benchmark="gamma")
    assert [r["benchmark"] for r in board._store.rejections()] == ["beta", "gamma"]
    assert board.table(markdown=False, benchmark="beta")["baseline"].all()
    with pytest.raises(ValueError, match="there is no benchmark 'gamma'"):
        board.table(benchmark="gamma")


def test_rate_limits_count_per_user_per_benchmark(tmp_path, two_splits, two_benchmarks):
    board = Leaderboard(_settings(tmp_path, two_benchmarks, rate_limit_per_day=1))
    alpha_truth, beta_truth = two_splits["alpha"][1], two_splits["beta"][1]
    board.submit(predictions_file(tmp_path / "a1.jsonl", shifted(alpha_truth, 1)), model_name="m", user="u")
    assert (
        board.submit(
            predictions_file(tmp_path / "b1.jsonl", shifted(beta_truth, 1)), model_name="m", user="u", benchmark="beta"
        ).status
        == "scored"
    )
    with pytest.raises(SubmissionRejected, match="the limit is 1"):
        board.submit(predictions_file(tmp_path / "a2.jsonl", shifted(alpha_truth, 2)), model_name="m", user="u")
    with pytest.raises(SubmissionRejected, match="the limit is 1"):
        board.submit(
            predictions_file(tmp_path / "b2.jsonl", shifted(beta_truth, 2)), model_name="m", user="u", benchmark="beta"
        )


def test_the_cli_submits_to_and_shows_a_named_benchmark(tmp_path, two_splits, two_benchmarks, capsys):
    db = tmp_path / "cli.sqlite"
    path = predictions_file(tmp_path / "b.jsonl", two_splits["beta"][1])
    common = ["--db", str(db), "--benchmarks", str(two_benchmarks)]
    submit = ["submit", str(path), "--model-name", "cli-beta", "--user", "u", *common, "--benchmark", "beta"]
    assert main([*submit, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["benchmark"] == "beta"
    assert main(["show", *common, "--benchmark", "beta", "--csv", str(tmp_path / "t.csv")]) == 0
    assert "benchmark beta" in capsys.readouterr().out
    assert "cli-beta" in pd.read_csv(tmp_path / "t.csv")["model"].tolist()
    assert main(["show", *common, "--csv", str(tmp_path / "alpha.csv")]) == 0
    assert "cli-beta" not in pd.read_csv(tmp_path / "alpha.csv")["model"].tolist()
    capsys.readouterr()
    assert main(["benchmarks", "--benchmarks", str(two_benchmarks)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["alpha", "beta"]
    assert "per-sample private" in lines[1] and "the first split" in lines[0]


def test_without_a_file_there_is_one_benchmark_named_after_the_data(board, split_dir):
    assert [b.name for b in board.benchmarks] == [implicit_benchmark_name(str(split_dir))] == [split_dir.name.lower()]
    assert board.benchmark().data == str(split_dir)
    assert implicit_benchmark_name("data/shapes-mini-heldout") == "shapes"
    assert implicit_benchmark_name("Org/ReasonSeg_Test") == "reasonseg_test"


# migration from version 1

V1_SCHEMA = """
CREATE TABLE submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, model_name TEXT NOT NULL, link TEXT, note TEXT,
    file_sha256 TEXT NOT NULL, submitted_at REAL NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'scored', 'failed')),
    error TEXT, scores TEXT, scored_at REAL, references_key TEXT
);
CREATE INDEX submissions_by_user ON submissions (user, submitted_at);
CREATE INDEX submissions_by_status ON submissions (status);
CREATE TABLE rejections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT, model_name TEXT, file_sha256 TEXT,
    attempted_at REAL NOT NULL, error TEXT NOT NULL
);
CREATE TABLE baselines (
    name TEXT PRIMARY KEY, file_sha256 TEXT NOT NULL, references_key TEXT NOT NULL,
    scores TEXT NOT NULL, scored_at REAL NOT NULL
);
PRAGMA user_version=1;
"""


def test_a_version_1_database_migrates_without_losing_rows(tmp_path, split_dir, truth):
    """A database as the single-benchmark leaderboard wrote it: a scored row, a pending row (a crash),
    a deleted row's id, a rejection and a cached baseline. All of it lands in the one benchmark."""
    import hashlib

    db = tmp_path / "lb" / "lb.sqlite"
    blobs = db.parent / "submissions"
    blobs.mkdir(parents=True)
    scorer = Scorer(str(split_dir), "test")
    scored_file = predictions_file(tmp_path / "scored.jsonl", shifted(truth, 1))
    pending_file = predictions_file(tmp_path / "pending.jsonl", shifted(truth, 2))
    rows = []
    for path in (scored_file, pending_file):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        (blobs / f"{sha}.jsonl").write_bytes(path.read_bytes())
        rows.append(sha)
    scores = scorer.score(read_predictions(scored_file)).summary
    oracle = (split_dir / "baselines" / "oracle.jsonl").read_bytes()
    with sqlite3.connect(db) as connection:
        connection.executescript(V1_SCHEMA)
        connection.execute(
            "INSERT INTO submissions VALUES "
            "(1, 'ann', 'old', 'https://x.org', 'n', ?, 100.0, 'scored', NULL, ?, 101.0, ?)",
            (rows[0], json.dumps(scores), scorer.references_key),
        )
        connection.execute(
            "INSERT INTO submissions VALUES "
            "(3, 'ann', 'crashed', NULL, NULL, ?, 200.0, 'pending', NULL, NULL, NULL, NULL)",
            (rows[1],),
        )
        connection.execute("UPDATE sqlite_sequence SET seq = 4 WHERE name = 'submissions'")  # #4 was discarded
        connection.execute("INSERT INTO rejections VALUES (1, 'bob', 'bad', NULL, 50.0, 'not JSON')")
        connection.execute(
            "INSERT INTO baselines VALUES ('oracle', ?, ?, ?, 10.0)",
            (hashlib.sha256(oracle).hexdigest(), scorer.references_key, json.dumps({"giou": 1.0, "ciou": 1.0, "n": 8})),
        )

    settings = LeaderboardSettings.from_env({}, db_path=db, data=str(split_dir))
    board = Leaderboard(settings)
    name = board.default_benchmark
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        migrated = [dict(row) for row in connection.execute("SELECT * FROM submissions ORDER BY id")]
        (rejection,) = [dict(row) for row in connection.execute("SELECT * FROM rejections")]
        (baseline,) = [dict(row) for row in connection.execute("SELECT * FROM baselines WHERE name = 'oracle'")]
    assert [(r["id"], r["model_name"], r["benchmark"], r["status"]) for r in migrated] == [
        (1, "old", name, "scored"),
        (3, "crashed", name, "scored"),  # the pending row was scored on open, under its benchmark
    ]
    first = migrated[0]
    assert (first["user"], first["link"], first["note"], first["submitted_at"]) == ("ann", "https://x.org", "n", 100.0)
    assert json.loads(first["scores"]) == scores and first["scored_at"] == 101.0  # kept, not rescored
    assert {(r["protocol"], r["checkpoint_selection"], r["trained_on"], r["params"]) for r in migrated} == {
        ("other", "unknown", None, None)
    }
    assert (rejection["benchmark"], rejection["error"]) == (name, "not JSON")
    assert (baseline["benchmark"], baseline["scored_at"]) == (name, 10.0)  # the cache survived: not rescored
    assert set(board.table(markdown=False)["model"]) >= {"old", "crashed", "oracle", "empty"}
    new = board.submit(predictions_file(tmp_path / "new.jsonl", shifted(truth, 3)), model_name="new", user="cat")
    assert new.id == 5  # the id sequence carried over: #4 is not reused
    Leaderboard(settings)  # opening a migrated database again changes nothing
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM submissions").fetchone()[0] == 3


def test_a_fresh_database_has_the_same_schema_as_a_migrated_one(tmp_path, split_dir):
    fresh = tmp_path / "fresh" / "lb.sqlite"
    old = tmp_path / "old" / "lb.sqlite"
    old.parent.mkdir()
    with sqlite3.connect(old) as connection:
        connection.executescript(V1_SCHEMA)
    for db in (fresh, old):
        Leaderboard(LeaderboardSettings.from_env({}, db_path=db, data=str(split_dir)))

    def schema(db: Path) -> dict[str, list[tuple]]:
        """Each table's and index's columns (name, type, not null, default, key), as SQLite reports them."""
        with sqlite3.connect(db) as connection:
            objects = connection.execute(
                "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            pragma = {"table": "table_xinfo", "index": "index_xinfo"}
            return {name: connection.execute(f"PRAGMA {pragma[kind]}({name})").fetchall() for kind, name in objects}

    assert schema(fresh) == schema(old)


def test_a_benchmark_whose_split_cannot_load_is_named_in_the_error(tmp_path, two_splits, capsys):
    path = _write_benchmarks(
        tmp_path / "b.json",
        [
            {"name": "alpha", "data": str(two_splits["alpha"][0])},
            {"name": "gone", "data": str(tmp_path / "missing-folder")},
        ],
    )
    assert main(["show", "--db", str(tmp_path / "lb.sqlite"), "--benchmarks", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: benchmark 'gone' cannot be opened: ") and err.count("\n") == 1
