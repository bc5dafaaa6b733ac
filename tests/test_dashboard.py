"""The instructor's dashboard: its figures follow the store (progress, agreement per group, flagged raters, the class
model's held-out accuracy), its errors are kept, and in Chromium (through Voila) its counts rise live while
simulated students rate into a PostgreSQL class store."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import CHROMIUM

from rlhf_lab.feedback.classroom import assign_items, class_overview, enroll, secure_class
from rlhf_lab.feedback.store import FeedbackStore
from rlhf_lab.feedback.tastes import SimulatedLearner, short_replies
from rlhf_lab.ui.dashboard import InstructorDashboard

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the weather is nice today and I like walking along the river with my dog in the park".split()


def _class(url, n_items=12, students=("s1", "s2", "s3", "s4")):
    store = FeedbackStore(url)
    records = []
    for i in range(n_items):
        texts = [" ".join(WORDS[:2 + i % 3]) + ".", " ".join(WORDS[:9 + i % 5]) + "."]
        records += [dict(prompt=f"Tell me about day {i}.", response=t, model="m", iteration=0)
                    for t in (texts if i % 2 else texts[::-1])]
    ids = store.add_responses(records)
    store.add_items([ids[2 * i:2 * i + 2] for i in range(n_items)])
    enroll(store, list(students))
    assign_items(store, k=len(students), seed=0)  # everyone judges every item: agreement is measurable
    return store


class _Gone:
    def __getattr__(self, name):
        raise RuntimeError("database went away")


def _rate(store, sid, taste=short_replies, n=None):
    items = store.pending_items(sid)[:n]
    return SimulatedLearner(taste, name=sid, rationality=30.0, seed=2).annotate(store, items)


def test_the_dashboard_follows_the_store_and_flags_an_odd_rater(store_url):
    store = _class(store_url)
    board = InstructorDashboard(store, live=False)
    assert "0 of 48 assigned judgments made" in board.header.value and "No pairwise judgments" in \
        board.agreement.value
    for sid in ("s1", "s2", "s3"):
        _rate(store, sid)
    _rate(store, "s4", taste=lambda p, r: -short_replies(p, r))  # always the other reply
    view = board.refresh()
    assert "48 of 48 assigned judgments made" in board.header.value and view["totals"]["done"] == 4
    raters = view["raters"].set_index("annotator")
    assert raters.loc["s4", "majority_agreement"] < 0.2 and "against the others' majority" in raters.loc["s4", "flag"]
    assert "against" not in raters.loc["s1", "flag"] and "very fast" in raters.loc["s1", "flag"]  # scripted clicks
    assert "s4" in board.raters.value and "against the others" in board.raters.value
    group = view["agreement"].iloc[0]
    assert group["items_shared"] == 12 and group["judgments"] == 48 and 0 < group["krippendorff_alpha"] < 0.6
    acc = board.refresh_model()
    assert acc["val_pairs"] > 0 and 0 <= acc["ci_low"] <= acc["accuracy"] <= acc["ci_high"] <= 1
    assert "held-out prompts" in board.model.value
    store.close()
    board.store = _Gone()  # a refresh that fails (in the thread, an exception would vanish): shown and kept
    board._safely(board.refresh)
    assert board.errors and "database went away" in board.errors[0] and "Refresh failed" in board.message.value


def test_an_html_name_shows_as_text(tmp_path):
    store = _class(tmp_path / "c.db", n_items=4, students=("<b>bold</b>", "s2"))
    _rate(store, "<b>bold</b>")
    board = InstructorDashboard(store, live=False)
    assert "&lt;b&gt;bold&lt;/b&gt;" in board.progress.value and "<b>bold</b>" not in board.progress.value
    assert class_overview(store)["totals"]["judged"] == 4


def test_the_dashboard_page_counts_live_in_chromium(postgres, voila, tmp_path):
    import papermill
    from playwright.sync_api import sync_playwright

    url = postgres.create_database("class_dashboard")
    store = _class(url, n_items=6, students=("ada", "bob"))
    logins = secure_class(store)
    notebook = tmp_path / "dashboard.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "instructor_dashboard.ipynb"), str(notebook),
                               prepare_only=True, progress_bar=False, parameters={"store_url": url, "refresh_s": 1.0})
    page_url = voila(notebook)
    shots = Path(os.environ.get("RLHF_LAB_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_url, timeout=120_000)
        page.get_by_text("0 of 12 assigned judgments made").first.wait_for(timeout=120_000)
        ada = FeedbackStore(logins["ada"])  # a student rates with their own login while the page is open
        _rate(ada, "ada", n=4)
        page.get_by_text("4 of 12 assigned judgments made").first.wait_for(timeout=30_000)
        bob = FeedbackStore(logins["bob"])
        _rate(bob, "bob")
        _rate(ada, "ada")
        page.get_by_text("12 of 12 assigned judgments made").first.wait_for(timeout=30_000)
        page.get_by_text("2 students (2 done)").first.wait_for(timeout=10_000)
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        browser.close()
    ada.close(), bob.close(), store.close()


def test_a_failed_refresh_is_taken_off_the_page_once_a_refresh_works(tmp_path):
    store = _class(tmp_path / "c.db", n_items=4, students=("s1", "s2"))
    board = InstructorDashboard(store, live=False)
    board.store = _Gone()
    board._safely(board.refresh)
    assert "Refresh failed" in board.message.value and "database went away" in board.message.value
    board._safely(board.refresh_model)
    assert "Refitting the class model failed" in board.message.value
    board.store = store
    board._safely(board.refresh)
    assert "Refresh failed" not in board.message.value and "Refitting the class model failed" in board.message.value
    board._safely(board.refresh_model)
    assert board.message.value == "" and len(board.errors) == 2  # kept for the record
    store.close()
