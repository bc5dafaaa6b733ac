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

import importlib.util
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "02_collect_feedback.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
ANNOTATOR = "browser"
EXECUTION_TIMEOUT_MS = 240_000


def _skip_loudly(reason: str):
    message = f"BROWSER TEST NOT RUN: {reason}"
    warnings.warn(message)
    print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.__stderr__)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voila exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"voila did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


@pytest.fixture
def voila_lesson(tmp_path):
    """(url, store path, screenshot folder): lesson 2 served by Voila on a free port of 127.0.0.1, no token."""
    if not CHROMIUM.exists():
        _skip_loudly(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    for module in ("playwright", "voila"):
        if importlib.util.find_spec(module) is None:
            _skip_loudly(f"the Python package {module!r} is missing (pip install -e '.[dev]')")
    import papermill

    run_dir = tmp_path / "run"
    notebook = tmp_path / "lesson2.ipynb"
    papermill.execute_notebook(str(LESSON), str(notebook), prepare_only=True, progress_bar=False,
                               parameters={"smoke": True, "run_dir": str(run_dir), "annotator": ANNOTATOR,
                                           "n_pairs": 4})
    port = _free_port()
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}",
                             "--Voila.ip=127.0.0.1", "--token=", "--show_tracebacks=True"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for_port(port, proc)
        shots = Path(os.environ.get("RLHF_LAB_SCREENSHOTS", tmp_path / "screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        yield f"http://127.0.0.1:{port}/", run_dir / "feedback.db", shots
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _saved(page, count: int) -> None:
    """Wait until the rater's progress reads `count` judged, then past the rater's 0.3 s reading guard."""
    page.get_by_text(f"{count} / 4").first.wait_for(timeout=30_000)
    page.wait_for_timeout(600)


def test_pairwise_rater_in_chromium_records_mouse_and_keyboard_judgments(voila_lesson):
    from playwright.sync_api import sync_playwright

    from rlhf_lab.feedback.store import FeedbackStore

    url, store_path, shots = voila_lesson
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, timeout=EXECUTION_TIMEOUT_MS)
        # Voila shows the page once the whole lesson has run: the agreement cell is near its end.
        page.get_by_text("Cohen's kappa between").first.wait_for(timeout=EXECUTION_TIMEOUT_MS)
        a_button = page.get_by_role("button", name="A is better")
        a_button.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / "rater_before.png"))

        a_button.click()  # mouse: A
        _saved(page, 1)
        page.get_by_role("button", name="B is better").click()  # mouse: B
        _saved(page, 2)
        page.locator(".rlhf-keys").click()  # keyboard: focus the key box, then 2 (B) and 0 (tie)
        page.keyboard.press("2")
        _saved(page, 3)
        page.screenshot(path=str(shots / "rater_after_three.png"))
        page.keyboard.press("0")
        _saved(page, 4)
        page.get_by_text("All done").first.wait_for(timeout=10_000)
        page.screenshot(path=str(shots / "rater_done.png"))
        browser.close()

    store = FeedbackStore(store_path)
    try:
        mine = store.judgments_df().query("annotator == @ANNOTATOR")
        assert [a["choice"] for a in mine["answer"]] == ["A", "B", "B", "tie"]
        assert mine["item_id"].tolist() == sorted(mine["item_id"].tolist()) and mine["item_id"].nunique() == 4
    finally:
        store.close()
