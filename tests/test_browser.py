"""Lesson 2 in a real browser: Debian's Chromium, driven by Playwright, opens the lesson through Voila on 127.0.0.1,
judges pairs in the pairwise rater with the mouse and with the keyboard, and the judgments are found in the store.

The lesson is parameterised with papermill (smoke model, a temporary `run_dir`, annotator "browser") but not run:
Voila runs it, as it would for a student. Voila executes the whole notebook first, so the lesson's headless
fallback (a simulated stand-in) judges under its own name, and the rater still waits for "browser" to click.

Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` tries), the `playwright` package (never
`playwright install`: the system Chromium is used) and `voila`. Without them the test is skipped with a loud warning.
Set RLHF_LAB_SCREENSHOTS to a folder to keep screenshots of the rater.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CHROMIUM, assert_widget_manager, lesson_page, screenshots

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "02_collect_feedback.ipynb"
ANNOTATOR = "browser"
EXECUTION_TIMEOUT_MS = 240_000


@pytest.fixture
def voila_lesson(tmp_path, voila):
    """(url, store path, screenshot folder): lesson 2 served by Voila on a free port of 127.0.0.1, no token."""
    import papermill

    run_dir = tmp_path / "run"
    notebook = tmp_path / "lesson2.ipynb"
    papermill.execute_notebook(str(LESSON), str(notebook), prepare_only=True, progress_bar=False,
                               parameters={"smoke": True, "run_dir": str(run_dir), "annotator": ANNOTATOR,
                                           "n_pairs": 4})
    return voila(notebook), run_dir / "feedback.db", screenshots(tmp_path)


def _lesson_page(url: str):
    """A Chromium page on lesson 2 at `url`, once Voila has run the whole lesson: the agreement cell near its end is
    on screen."""
    return lesson_page(url, lambda page: page.get_by_text("Cohen's kappa between"), EXECUTION_TIMEOUT_MS)


def _saved(page, count: int) -> None:
    """Wait until the rater's progress reads `count` judged, then past the rater's 0.5 s reading guard."""
    page.get_by_text(f"{count} / 4").first.wait_for(timeout=30_000)
    page.wait_for_timeout(900)


def test_pairwise_rater_in_chromium_records_mouse_and_keyboard_judgments(voila_lesson):
    """Mouse and keys in lesson 2, with the widget manager that fits the ipywidgets in use (7.7 under
    `scripts/test_widgets7.sh`, as on Colab; 8 otherwise)."""
    from rlhf_lab.feedback.store import FeedbackStore

    url, store_path, shots = voila_lesson
    with _lesson_page(url) as page:
        assert_widget_manager(page)
        a_button = page.get_by_role("button", name="A is better")
        a_button.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "rater_before.png"))

        a_button.click()  # mouse: A
        _saved(page, 1)
        keys = page.locator(".rlhf-keys")
        assert "keys off" in keys.inner_text()  # nothing on screen pretends keys work before the box is clicked
        keys.click()  # keyboard: turn the keys on, then 2 (B)
        assert "keys on" in keys.inner_text()
        page.keyboard.press("2")
        _saved(page, 2)
        page.get_by_role("button", name="A is better").click()  # a mouse click on the rater keeps the keys on
        _saved(page, 3)
        page.screenshot(path=str(shots / "rater_after_three.png"))
        assert "keys on" in keys.inner_text()
        page.keyboard.press("0")  # tie, without clicking the key box again
        _saved(page, 4)
        page.get_by_text("All done").first.wait_for(timeout=10_000)
        page.screenshot(path=str(shots / "rater_done.png"))

    store = FeedbackStore(store_path)
    try:
        mine = store.judgments_df().query("annotator == @ANNOTATOR")
        assert [a["choice"] for a in mine["answer"]] == ["A", "B", "A", "tie"]
        assert mine["item_id"].tolist() == sorted(mine["item_id"].tolist()) and mine["item_id"].nunique() == 4
    finally:
        store.close()


def _replies(page) -> list[str]:
    """The text of the two reply boxes the pairwise rater shows now."""
    return page.locator(".rlhf-rater .rlhf-reply").all_inner_texts()


def _shows(page, replies: list[str], timeout_ms: int = 15_000) -> bool:
    """Whether the rater comes to show `replies` within `timeout_ms` (the boxes update just after the progress)."""
    for _ in range(timeout_ms // 250):
        if _replies(page) == replies:
            return True
        page.wait_for_timeout(250)
    return False


def test_a_reloaded_page_resumes_the_rater_and_undo_keeps_flags(voila_lesson):
    """Judge 2 of 4 pairs and flag a reply of pair 2, then reload the page: Voila starts a new kernel and runs the
    lesson again (a restarted kernel, as a student's next day). The rater shows pair 3 and "2 / 4"; undo takes back
    pair 2's judgment only (pair 1's stays) and shows pair 2 again; the flag survives the undo."""
    from rlhf_lab.feedback.store import FeedbackStore

    url, store_path, shots = voila_lesson
    with _lesson_page(url) as page:
        page.get_by_role("button", name="A is better").click()
        _saved(page, 1)
        page.wait_for_timeout(1000)
        pair2 = _replies(page)
        page.get_by_role("checkbox", name="harmful").check()  # flag reply A of pair 2
        page.get_by_role("button", name="save flags").click()
        page.get_by_text("Saved for A").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="B is better").click()
        _saved(page, 2)
        page.wait_for_timeout(1000)
        pair3 = _replies(page)
        assert pair3 != pair2 and len(pair3) == 2

        page.reload(timeout=EXECUTION_TIMEOUT_MS)  # a new kernel runs the whole lesson again
        page.get_by_text("Cohen's kappa between").first.wait_for(timeout=EXECUTION_TIMEOUT_MS)
        page.get_by_text("2 / 4").first.wait_for(timeout=30_000)
        assert _shows(page, pair3), f"the rater did not resume at pair 3: {_replies(page)} != {pair3}"
        page.locator(".rlhf-rater").first.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "rater_resumed.png"))
        page.wait_for_timeout(900)  # past the rater's reading guard
        page.get_by_role("button", name="undo last").click()
        page.get_by_text("1 / 4").first.wait_for(timeout=30_000)
        assert _shows(page, pair2), f"undo did not bring back pair 2: {_replies(page)} != {pair2}"

    store = FeedbackStore(store_path)
    try:
        mine = store.judgments_df().query("annotator == @ANNOTATOR")
        pairwise, flags = mine[mine["kind"] == "pairwise"], mine[mine["kind"] == "flags"]
        assert [a["choice"] for a in pairwise["answer"]] == ["A"], "undo removed more (or less) than pair 2's judgment"
        assert [a["flags"] for a in flags["answer"]] == [["harmful"]], "the flag did not survive the undo"
    finally:
        store.close()


LONG_MARKDOWN = ("**Short answer:** yes, if you keep it small.\n\n"
                 + "A longer paragraph that wraps over several lines so the line height can be seen. " * 6
                 + "\n\n```python\nprint('hello')\n```\n\n"
                 "| option | cost |\n| --- | --- |\n| walk | free |\n| bus | 2 EUR |\n")
THEMED_RATER = """
from rlhf_lab import FeedbackStore
from rlhf_lab.ui import PairwiseRater
store = FeedbackStore("themes.db")
ids = store.add_responses([dict(prompt="How do I get to the station?", response=t, model="m", iteration=0)
                           for t in (LONG, "")])
store.add_items([ids])
PairwiseRater(store, "me").widget
"""


def _luminance(css_colour: str) -> float:
    """Relative luminance (0 black … 1 white) of a computed CSS colour "rgb(r, g, b)" / "rgba(r, g, b, a)"."""
    r, g, b = (int(float(v)) / 255 for v in css_colour[css_colour.index("(") + 1:-1].split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_rater_reads_well_in_light_and_dark_themes(tmp_path, voila, theme):
    """A long markdown reply beside an empty one, served in JupyterLab's light and dark themes at 1000 px: the reply
    boxes take the theme's colours (dark boxes with light text in the dark theme), the markdown is formatted (bold,
    a code block, a table kept in its columns), the empty reply says so, and the strength control fits on one row."""
    import nbformat
    from playwright.sync_api import sync_playwright

    notebook = tmp_path / "themes.ipynb"
    code = THEMED_RATER.replace("(LONG,", f"({LONG_MARKDOWN!r},")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), notebook)
    url, shots = voila(notebook, theme=theme), screenshots(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url, timeout=EXECUTION_TIMEOUT_MS)
        page.get_by_role("button", name="A is better").wait_for(timeout=EXECUTION_TIMEOUT_MS)
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"rater_{theme}.png"), full_page=True)
        style = page.evaluate("""() => {
            const box = document.querySelector('.rlhf-reply'), s = getComputedStyle(box);
            const keys = getComputedStyle(document.querySelector('.rlhf-keys'));
            return {background: s.backgroundColor, colour: s.color, lineHeight: parseFloat(s.lineHeight),
                    fontSize: parseFloat(s.fontSize), keysColour: keys.color, keysBackground: keys.backgroundColor,
                    page: getComputedStyle(document.body).backgroundColor,
                    table: box.querySelector('pre.rlhf-table') ? box.querySelector('pre.rlhf-table').innerText : '',
                    pre: box.querySelectorAll('pre').length,
                    bold: box.querySelectorAll('strong').length,
                    empty: document.querySelector('.rlhf-empty') ? document.querySelector('.rlhf-empty').innerText
                                                                 : null};
        }""")
        strength = page.get_by_role("button", name="clearly")
        rows = {round(b.bounding_box()["y"]) for b in strength.locator("xpath=..").locator("button").all()}
        browser.close()
    background, text = _luminance(style["background"]), _luminance(style["colour"])
    if theme == "dark":
        assert background < 0.35 and text > 0.8, style  # JupyterLab's dark layout colour 2 is rgb(66, 66, 66)
        assert _luminance(style["page"]) < 0.25, style
    else:
        assert background > 0.85 and text < 0.3, style
    assert abs(_luminance(style["keysColour"]) - _luminance(style["keysBackground"])) > 0.4, style  # the key hint
    assert 1.3 <= style["lineHeight"] / style["fontSize"] <= 1.6, style
    assert "| walk | free |" in style["table"] and style["pre"] == 2 and style["bold"] == 1, style  # columns kept
    assert style["empty"] and "empty" in style["empty"], style
    assert len(rows) == 1, f"the strength buttons wrap onto {len(rows)} rows"
