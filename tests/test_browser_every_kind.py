"""Lesson 9 in a real browser: Debian's Chromium, driven by Playwright, opens the lesson through Voila on 127.0.0.1,
scores one item in the Likert rater and gives thumbs in the thumbs rater with the mouse and with the keyboard, undoes
the last thumb, and the judgments are found in the store, reply by reply.

As in tests/test_browser.py (lesson 2): the lesson is parameterised with papermill (smoke model, a temporary
`run_dir`, annotator "browser") but not run; Voila runs it, as it would for a student, so the simulated stand-in
judges under its own name ("browser (simulated)") and the raters still wait for "browser" to click. The smoke lesson
trains KTO on the tiny model, so Voila takes a few minutes. Skipped loudly without Chromium, playwright or voila.
"""

from __future__ import annotations

from pathlib import Path

from conftest import assert_widget_manager, lesson_page, screenshots

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "09_feedback_of_every_kind.ipynb"
ANNOTATOR = "browser"
EXECUTION_TIMEOUT_MS = 600_000


def _lesson_page(url: str):
    """A Chromium page on lesson 9 once Voila has run all of it: the before/after table of section 10 (after KTO)
    is on screen."""
    return lesson_page(url, lambda page: page.locator("th", has_text="gold after"), EXECUTION_TIMEOUT_MS)


def _rater(page, has_text: str):
    """The rater (`.rlhf-rater`) of the page whose text includes `has_text`, once it is on screen (widget views may
    render a moment after the lesson's last output), and only one."""
    from playwright.sync_api import expect

    rater = page.locator(".rlhf-rater").filter(has_text=has_text)
    expect(rater, f"one rater saying {has_text!r}").to_have_count(1, timeout=30_000)
    return rater


def _shows(locator, text: str) -> None:
    """Wait until `locator` reads `text`, whitespace aside (a rater's boxes update just after its progress)."""
    from playwright.sync_api import expect

    expect(locator).to_have_text(_words(text), use_inner_text=True, timeout=15_000)


def _progress(rater, text: str, page) -> None:
    """Wait until `rater`'s progress reads `text` ("1 / 4"), then past the rater's 0.5 s reading guard."""
    rater.get_by_text(text, exact=True).first.wait_for(timeout=30_000)
    page.wait_for_timeout(900)


def _words(text: str) -> str:
    return " ".join(text.split())


def _judgments(store_path) -> list[tuple]:
    """ANNOTATOR's judgments in the store, oldest first: (kind, item id or response id, answer)."""
    from rlhf_lab.feedback.store import FeedbackStore

    store = FeedbackStore(store_path)
    try:
        df = store.judgments_df().query("annotator == @ANNOTATOR")
        return [(j.kind, int(j.response_id) if j.kind == "thumbs" else int(j.item_id), j.answer)
                for j in df.itertuples()]
    finally:
        store.close()


def test_thumbs_and_likert_raters_in_chromium_record_what_was_clicked(tmp_path, voila):
    """Lesson 9 (smoke: 2 items to score, 2 pairs = 4 replies to thumb): Likert 5 and 3 on the first item with the
    mouse; then in the thumbs rater 👍 on reply 1 with the mouse, 👎 on reply 2 with key 2, and key u undoes the 👎.
    The store holds exactly those judgments for "browser", on the replies the rater showed, in its order; the
    screen shows the reply the store says is next. With the widget manager that fits the ipywidgets in use."""
    import papermill
    from playwright.sync_api import expect

    from rlhf_lab.feedback.store import FeedbackStore

    run_dir, notebook = tmp_path / "run", tmp_path / "lesson9.ipynb"
    papermill.execute_notebook(str(LESSON), str(notebook), prepare_only=True, progress_bar=False,
                               parameters={"smoke": True, "run_dir": str(run_dir), "annotator": ANNOTATOR})
    url, shots, store_path = voila(notebook), screenshots(tmp_path), run_dir / "lesson9_feedback.db"
    with _lesson_page(url) as page:
        assert_widget_manager(page)  # ipywidgets 7.7's under scripts/test_widgets7.sh, 8's otherwise
        store = FeedbackStore(store_path)  # what the lesson put in the store: the raters show these, in this order
        try:
            scored = store.items(kind="rating")[0]
            replies = [r for item in store.items(kind="pairwise")[:2] for r in item.responses]  # smoke: yours = 2
        finally:
            store.close()
        assert _judgments(store_path) == [], "someone judged as 'browser' before the browser did"

        likert = _rater(page, "1 = poor, 7 = excellent")
        likert.get_by_text("0 / 2", exact=True).wait_for(timeout=30_000)
        likert.get_by_role("button", name="5", exact=True).nth(0).click()  # reply A: 5
        likert.get_by_role("button", name="3", exact=True).nth(1).click()  # reply B: 3
        likert.get_by_role("button", name="submit").click()
        _progress(likert, "1 / 2", page)

        thumbs = _rater(page, "thumbs down")
        thumbs.get_by_text("0 / 4", exact=True).wait_for(timeout=30_000)
        shown = thumbs.locator(".rlhf-prompt")
        reply = thumbs.locator(".rlhf-reply")
        _shows(shown, replies[0].prompt)
        _shows(reply, replies[0].text)
        up = thumbs.get_by_role("button", name="thumbs up")
        up.scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "thumbs_before.png"))
        up.click()  # mouse: 👍 on reply 1
        _progress(thumbs, "1 / 4", page)
        _shows(reply, replies[1].text)
        assert _judgments(store_path) == [("rating", scored.id, {"scores": [5, 3], "scale": [1, 7]}),
                                          ("thumbs", replies[0].id, {"up": True})]

        keys = thumbs.locator(".rlhf-keys")
        expect(keys).to_contain_text("keys off")  # nothing pretends keys work before the box is clicked
        expect(keys).to_contain_text("2 = 👎 thumbs down")
        keys.click()
        expect(keys).to_contain_text("keys on")
        page.keyboard.press("2")  # keyboard: 👎 on reply 2
        _progress(thumbs, "2 / 4", page)
        page.screenshot(path=str(shots / "thumbs_after_two.png"))
        assert _judgments(store_path) == [("rating", scored.id, {"scores": [5, 3], "scale": [1, 7]}),
                                          ("thumbs", replies[0].id, {"up": True}),
                                          ("thumbs", replies[1].id, {"up": False})]
        page.keyboard.press("u")  # undo the 👎: reply 2 is back on screen
        _progress(thumbs, "1 / 4", page)
        _shows(reply, replies[1].text)
        page.screenshot(path=str(shots / "thumbs_undone.png"))

    assert _judgments(store_path) == [("rating", scored.id, {"scores": [5, 3], "scale": [1, 7]}),
                                      ("thumbs", replies[0].id, {"up": True})], "undo removed more or less than the 👎"
