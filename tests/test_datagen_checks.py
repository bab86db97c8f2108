"""The answer checks and prompt templates of the generation pipeline, on hand-built records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval import rle
from llmseg.datagen import check
from llmseg.datagen.check import CheckConfig, check_reply, parse_reply
from llmseg.datagen.records import ImageRecord, ObjectRecord
from llmseg.datagen.templates import load_template
from llmseg.datagen.write import split_of


def _record() -> ImageRecord:
    """Three objects on a 10x10 image: a bat (LVIS-style name), a baseball bat, and an empty-mask cup."""
    masks = np.zeros((3, 10, 10), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 5:, 5:] = True
    objects = [
        ObjectRecord(1, "bat (animal)", [0, 0, 2, 2], int(masks[0].sum()), rle.encode(masks[0]), ["bat"]),
        ObjectRecord(2, "baseball bat", [5, 5, 5, 5], int(masks[1].sum()), rle.encode(masks[1]), ["baseball bat"]),
        ObjectRecord(3, "cup", [0, 0, 1, 1], 0, rle.encode(masks[2]), ["cup", "mug"]),
    ]
    return ImageRecord("img", "img.jpg", 10, 10, "simple", "test", objects)


def _reply(*items: dict) -> str:
    return json.dumps({"questions": list(items)})


def _item(question: str, ids: list, answer: str = "That one.") -> dict:
    return {"question": question, "answer": answer, "object_ids": ids}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Here you go: {questions: [", check.MALFORMED_JSON),
        ('{"answers": []}', check.MALFORMED_JSON),
        (_reply("just a string"), check.MALFORMED_ITEM),
        (_reply(_item("What flies at night?", [True])), check.MALFORMED_ITEM),
        (_reply(_item("   ", [1])), check.EMPTY_TEXT),
        (_reply(_item("What flies at night?", [1], answer="")), check.EMPTY_TEXT),
        (_reply(_item("word " * 61, [1])), check.TOO_LONG),
        (_reply(_item("What flies at night?", [])), check.NO_OBJECT),
        (_reply(_item("What flies at night?", [4])), check.UNKNOWN_OBJECT),
        (_reply(_item("What flies at night?", [0])), check.UNKNOWN_OBJECT),
        (_reply(_item("Which Bats sleep upside down?", [1])), check.LEAK),
        (_reply(_item("What would a baseball-bat hit?", [2])), check.LEAK),
        (_reply(_item("What holds my coffee, like a mug?", [3])), check.LEAK),
        (_reply(_item("What holds my coffee?", [3])), check.EMPTY_MASK),
    ],
)
def test_each_failure_is_rejected_under_its_reason(text: str, reason: str) -> None:
    kept, rejected = check_reply(text, _record(), CheckConfig())
    assert kept == []
    assert [r.reason for r in rejected] == [reason]


def test_valid_questions_are_kept_with_sorted_unique_ids_and_fenced_json_is_accepted() -> None:
    reply = _reply(_item("What flies at night?", [1]), _item("What is swung in a game?", ["2", 2]))
    text = "```json\n" + reply + "\n```"
    kept, rejected = check_reply(text, _record(), CheckConfig())
    assert rejected == []
    assert [(q.index, q.object_ids) for q in kept] == [(0, [1]), (1, [2])]


def test_duplicates_are_rejected_after_the_first_and_prose_around_json_is_tolerated() -> None:
    text = "Sure! " + _reply(_item("What flies at night?", [1]), _item("what flies, at night", [1])) + " Enjoy."
    kept, rejected = check_reply(text, _record(), CheckConfig())
    assert [q.index for q in kept] == [0]
    assert [(r.reason, r.index) for r in rejected] == [(check.DUPLICATE, 1)]


def test_leak_check_modes_differ_only_for_non_target_names() -> None:
    text = _reply(_item("What flies near the cup?", [1]))
    assert len(check_reply(text, _record(), CheckConfig(leak_check="targets"))[0]) == 1
    assert check_reply(text, _record(), CheckConfig(leak_check="all"))[1][0].reason == check.LEAK
    leaking = _reply(_item("Which bat flies?", [1]))
    assert len(check_reply(leaking, _record(), CheckConfig(leak_check="off"))[0]) == 1


def test_a_word_containing_a_category_name_is_not_a_leak() -> None:
    kept, _ = check_reply(_reply(_item("Which acrobat-like animal hangs in caves?", [1])), _record(), CheckConfig())
    assert len(kept) == 1


def test_parse_reply_accepts_a_bare_list() -> None:
    assert parse_reply('[{"question": "q", "answer": "a", "object_ids": [1]}]')[0]["question"] == "q"


def test_builtin_templates_load_and_fill() -> None:
    template = load_template("ask_v1")
    messages = template.messages(width=4, height=3, objects="1. cup", description="", questions=2)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "1. cup" in messages[1]["content"] and "Write 2 different questions" in messages[1]["content"]
    described = load_template("describe_v1").messages(image_url="data:image/jpeg;base64,AAAA")
    assert described[-1]["content"][0]["image_url"]["url"].startswith("data:image/jpeg")


def test_template_errors_are_value_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="no prompt template"):
        load_template("ask_v999")
    bad = tmp_path / "bad.txt"
    bad.write_text("no section header\n")
    with pytest.raises(ValueError, match="must start with"):
        load_template(str(bad))
    unknown = tmp_path / "custom.txt"
    unknown.write_text("[user]\nHello ${nobody}\n")
    with pytest.raises(ValueError, match="unknown field"):
        load_template(str(unknown)).messages(objects="")


def test_split_assignment_is_stable_and_follows_the_fractions() -> None:
    splits = (("train", 0.7), ("test", 0.3))
    names = [split_of(str(i), splits, seed=0) for i in range(4000)]
    assert names == [split_of(str(i), splits, seed=0) for i in range(4000)]
    assert abs(names.count("train") / 4000 - 0.7) < 0.03
    assert names != [split_of(str(i), splits, seed=1) for i in range(4000)]
