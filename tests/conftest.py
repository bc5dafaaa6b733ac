"""Shared fixtures: a tiny random policy with SmolLM2's real tokenizer, loaded once per test session."""

from __future__ import annotations

import contextlib

import pytest


@pytest.fixture(scope="session", autouse=True)
def drafts_in_a_temporary_folder(tmp_path_factory):
    """Raters on stores with no writable folder of their own (PostgreSQL) keep drafts in a per-user folder: during
    the tests, a temporary one, never the home folder of whoever runs them."""
    import os

    from rlhf_lab.feedback.drafts import DRAFTS_ENV

    before = os.environ.get(DRAFTS_ENV)
    os.environ[DRAFTS_ENV] = str(tmp_path_factory.mktemp("drafts"))
    yield
    if before is None:
        os.environ.pop(DRAFTS_ENV, None)
    else:
        os.environ[DRAFTS_ENV] = before


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 2-layer random Llama with SmolLM2's tokenizer (pad distinct from EOS, left padding)."""
    from rlhf_lab.policy.models import tiny_policy

    return tiny_policy(seed=0)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct (integration tests only): converted once, then read from the cache."""
    from rlhf_lab.policy.models import load_policy

    return load_policy("smollm2-135m", device="cpu")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (use with `pytestmark = pytest.mark.usefixtures("one_thread")`): the tiny model
    gains nothing from more, and the test machines are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def peaked_policy(tokenizer, seed: int = 0, scale: float = 8.0):
    """A tiny random policy whose (tied) embeddings are scaled up so its next-token distribution is peaked (a
    random one is nearly uniform over 49k tokens, too flat for PPO, RLOO, DPO or KTO to find anything in a few
    updates)."""
    import torch

    from rlhf_lab.policy.models import tiny_policy

    model, _ = tiny_policy(tokenizer, seed=seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    return model


def prefix_batch(tokenizer):
    """Three left-padded prompts that start with the same 6 tokens, then right-padded replies: (ids, mask, P)."""
    import torch

    pad, prefix = tokenizer.pad_token_id, [5, 6, 7, 8, 9, 10]
    prompts = [prefix + [11], prefix + [12, 13, 14, 17], prefix + [15, 16]]  # 3, 0 and 2 pads
    replies = [[20, 21, 22], [23, 24, pad], [25, 26, 27]]
    ids = torch.tensor([[pad] * (10 - len(p)) + p + r for p, r in zip(prompts, replies)])  # (3, 10 + 3)
    return ids, (ids != pad).long(), 10


def length_reward(texts):
    """A reward (and gold) for the method tests: the reply's length, about 1 for 40 characters."""
    return [len(t) / 40 for t in texts]


def longer_is_chosen(model, tokenizer, prompts, sampling):
    """Preference pairs (prompt, chosen, rejected) of two sampled replies per prompt, the longer one chosen."""
    import pandas as pd

    from rlhf_lab.policy.generation import generate

    batch = generate(model, tokenizer, prompts, sampling, n_per_prompt=2, seed=7)
    return pd.DataFrame([dict(prompt=batch.prompts[i], chosen=max(batch.responses[i:i + 2], key=len),
                              rejected=min(batch.responses[i:i + 2], key=len)) for i in range(0, len(batch), 2)])


@pytest.fixture(scope="module")
def tokenizer(tiny):
    """The tiny policy's tokenizer (SmolLM2's)."""
    return tiny[1]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- a browser and Voila (the browser tests: Debian's Chromium driven by Playwright) ---------------------------------
CHROMIUM = "/usr/bin/chromium"


def skip_loudly(reason: str):
    """Skip a test that could not run here, with a warning and a banner nobody can miss."""
    import sys
    import warnings

    message = f"BROWSER TEST NOT RUN: {reason}"
    warnings.warn(message)
    print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.__stderr__)
    pytest.skip(message)


@pytest.fixture
def voila(tmp_path):
    """serve(notebook, theme="light"|"dark") -> URL: Voila serving that notebook (from its folder) on a free port of
    127.0.0.1, no token, in that JupyterLab theme, stopped after the test. Skips loudly without Chromium, playwright
    or voila."""
    import importlib.util
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        skip_loudly(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    for module in ("playwright", "voila"):
        if importlib.util.find_spec(module) is None:
            skip_loudly(f"the Python package {module!r} is missing (pip install -e '.[dev]')")
    procs = []

    def serve(notebook, timeout_s: float = 60.0, theme: str = "light") -> str:
        notebook = Path(notebook)
        port = free_port()
        log = open(tmp_path / f"voila-{port}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}",
                                 "--Voila.ip=127.0.0.1", "--token=", "--show_tracebacks=True",
                                 f"--theme={theme}"],
                                cwd=notebook.parent, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        procs.append((proc, log))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"voila exited early with code {proc.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}/"
            time.sleep(0.3)
        raise TimeoutError(f"voila did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")

    yield serve
    for proc, log in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def lesson_page(url: str, finished, timeout_ms: int):
    """A Chromium page (1280 × 900) on the lesson Voila serves at `url`, once Voila has run the whole lesson: the
    locator `finished(page)` (an output near the lesson's end) is on screen within `timeout_ms`. Closes the browser
    after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, timeout=timeout_ms)
        finished(page).first.wait_for(timeout=timeout_ms)
        try:
            yield page
        finally:
            browser.close()


def assert_widget_manager(page) -> None:
    """The page came with the Voila widget manager that fits the ipywidgets in use (7.7 under
    `scripts/test_widgets7.sh`, as on Colab; 8 otherwise)."""
    import ipywidgets

    manager = "widgets-manager7" if ipywidgets.__version__.startswith("7.") else "widgets-manager8"
    assert f"@voila-dashboards/{manager}" in page.content(), f"Voila did not serve its {manager} for ipywidgets " \
                                                              f"{ipywidgets.__version__}"


def screenshots(tmp_path):
    """Where a browser test keeps its screenshots: $RLHF_LAB_SCREENSHOTS, else a folder of `tmp_path`."""
    import os
    from pathlib import Path

    shots = Path(os.environ.get("RLHF_LAB_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    return shots


# ---- a real PostgreSQL server (the class store's tests: never a mock) ------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temporary folder, started once per test session and stopped after it.
    Skipped (loudly) where PostgreSQL is not installed, unless RLHF_LAB_REQUIRE_POSTGRES=1 (`.ci/run` sets it after
    installing the server), where its absence fails."""
    import os

    from rlhf_lab.feedback.pgserver import LocalPostgres, postgres_bindir

    if postgres_bindir() is None:
        message = "!!! PostgreSQL is not installed (apt-get install postgresql): the PostgreSQL store tests are SKIPPED"
        if os.environ.get("RLHF_LAB_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="rlhf-lab-pg-")  # not under pytest's root-only folder: as root the server
    server = LocalPostgres(folder, port=free_port()).start()  # runs as the postgres user, who must reach it
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


_DATABASES = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """Where a test's store lives: a fresh SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "feedback.db")
    server = request.getfixturevalue("postgres")
    return server.create_database(f"test_{next(_DATABASES)}")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what `native_bf16` reports (through its environment override) for one test."""
    from rlhf_lab.core import machine

    def force(value: bool):
        monkeypatch.setenv(machine.BF16_ENV, "1" if value else "0")
        machine.native_bf16.cache_clear()
    yield force
    monkeypatch.delenv(machine.BF16_ENV, raising=False)
    machine.native_bf16.cache_clear()


def fill_disk_at_flush(monkeypatch, n: int) -> None:
    """From here on, `rlhf_lab.core.files`' n-th file flush fails as a full disk does (ENOSPC); the others go
    through: a disk that fills in the middle of writing a set of files."""
    import errno
    import os

    import rlhf_lab.core.files as files

    flushes, real_fsync = [], os.fsync

    def fsync(fd):
        flushes.append(fd)
        if len(flushes) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(files.os, "fsync", fsync)
