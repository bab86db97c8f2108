"""The Leaderboard tab's compare view and per-sample download in a real browser.

A screenshot of the compare view is saved under ``tests/artifacts/`` (``compare-desktop.png``)
for people to look at.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from test_app_support import SECOND_BENCHMARK, centred_box_predictions
from test_browser_app import ARTIFACTS, DESKTOP, browser, open_app, open_tab  # noqa: F401 (browser is a fixture)

pytestmark = pytest.mark.browser


def pick(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.locator(dropdown).get_by_role("option", name=option, exact=True).click()


def submit(page: Page, path: Path, model: str, user: str) -> int:
    """Submit through the Submit tab; return the new submission's id from the message."""
    open_tab(page, "Submit")
    page.locator("#submit-file input[type=file]").set_input_files(str(path))
    page.locator("#submit-model textarea, #submit-model input").first.fill(model)
    page.locator("#submit-user textarea, #submit-user input").first.fill(user)
    page.locator("#submit-button").click()
    expect(page.locator("#submit-message")).to_contain_text("ranked")
    return int(re.search(r"submission (\d+)", page.locator("#submit-message").inner_text()).group(1))


def test_compare_two_rows_and_download_only_ones_own_per_sample_iou(browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    model, user = f"browser-compare-{uuid.uuid4().hex[:6]}", f"compare-{uuid.uuid4().hex[:6]}"
    page = open_app(browser, DESKTOP)
    submission = submit(page, centred_box_predictions(tmp_path / "boxes.jsonl", margin=0.25), model, user)

    open_tab(page, "Leaderboard")
    expect(page.locator("#leaderboard-table")).to_contain_text(model)
    # The pickers follow the table: the new submission is offered, newest first, as A.
    expect(page.locator("#compare-a input")).to_have_value(f"#{submission} {model} ({user})")
    pick(page, "#compare-a", "baseline oracle-best-instance")
    pick(page, "#compare-b", "baseline empty")
    page.locator("#compare-button").click()
    message = page.locator("#compare-message")
    expect(message).to_contain_text("baseline oracle-best-instance")
    expect(message).to_contain_text("p <0.001")
    table = page.locator("#compare-table")
    expect(table).to_contain_text("overall")
    expect(table).to_contain_text("no-target")  # per tag, too
    page.locator("#compare").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#compare").screenshot(path=ARTIFACTS / "compare-desktop.png")

    pick(page, "#compare-a", f"#{submission} {model} ({user})")
    pick(page, "#compare-b", f"#{submission} {model} ({user})")
    page.locator("#compare-button").click()
    expect(message).to_contain_text("gIoU +0.0 points [+0.0, +0.0], p 1.000")

    # The pickers follow the benchmark selector: the second benchmark has only the empty baseline.
    page.locator("#leaderboard-benchmark input").click()
    page.locator("#leaderboard-benchmark").get_by_role("option", name=SECOND_BENCHMARK, exact=True).click()
    expect(page.locator("#compare-a input")).not_to_have_value(f"#{submission} {model} ({user})")
    page.locator("#compare-a input").click()
    options = page.locator("#compare-a").get_by_role("option")
    expect(options.filter(has_text="baseline empty")).to_have_count(1)
    expect(options.filter(has_text="oracle")).to_have_count(0)
    expect(options.filter(has_text=model)).to_have_count(0)
    options.filter(has_text="baseline empty").click()
    pick(page, "#compare-b", "baseline empty")
    page.locator("#compare-button").click()
    expect(message).to_contain_text(f"on {SECOND_BENCHMARK}")

    page.locator("#per-sample").click()  # open the accordion
    page.locator("#per-sample-id textarea, #per-sample-id input").first.fill(str(submission))
    page.locator("#per-sample-user textarea, #per-sample-user input").first.fill("someone-else")
    page.locator("#per-sample-button").click()
    expect(page.locator("#per-sample-message")).to_contain_text(f"submission #{submission} is not yours")
    expect(page.locator("#per-sample-download")).to_be_hidden()
    page.locator("#per-sample-user textarea, #per-sample-user input").first.fill(user)
    page.locator("#per-sample-button").click()
    expect(page.locator("#per-sample-message")).to_contain_text(f"submission {submission}: 200 questions")
    with page.expect_download() as download_info:
        page.locator("#per-sample-download").click()
    lines = Path(download_info.value.path()).read_text().splitlines()
    assert lines[0] == "id,tags,iou" and len(lines) == 201
