"""Two kernels on one run folder: the second is refused in one line, and nothing of the first one's work goes."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from rlhf_lab.cli import demo_config
from rlhf_lab.loop.experiment import RLHFRun

REPO = Path(__file__).resolve().parents[1]


def _in_another_kernel(code: str) -> list:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_kernel_cannot_open_or_overwrite_a_run_in_use(tmp_path):
    path = tmp_path / "run"
    run = RLHFRun.create(path, demo_config(smoke=True), callbacks=[], log=None)
    (path / "iter_002").mkdir()  # the first kernel's iteration in progress, and the metrics it appended
    (path / "iter_002" / "eval_samples.jsonl").write_text("{}\n")
    (path / "ppo_metrics.jsonl").write_text('{"update": 1}\n{"update": 2}\n')
    outcomes = _in_another_kernel(f"""
        import json
        from rlhf_lab.cli import demo_config
        from rlhf_lab.loop.experiment import RLHFRun
        out = []
        for attempt in (lambda: RLHFRun.open({str(path)!r}, callbacks=[], log=None),
                        lambda: RLHFRun.create({str(path)!r}, demo_config(smoke=True), overwrite=True, log=None)):
            try:
                attempt()
                out.append("opened")
            except Exception as err:
                out.append(f"{{type(err).__name__}}: {{err}}")
        print(json.dumps(out))
    """)
    assert [o.split(":")[0] for o in outcomes] == ["FolderInUseError"] * 2
    assert all(f"the run in {path} is in use by another kernel" in o and "run.close()" in o for o in outcomes)
    assert (path / "iter_002" / "eval_samples.jsonl").read_text() == "{}\n"
    assert (path / "ppo_metrics.jsonl").read_text() == '{"update": 1}\n{"update": 2}\n'
    assert (path / "config.json").is_file()

    again = RLHFRun.open(path, callbacks=[], log=None)  # the same kernel may open it again (a cell run twice)
    assert again.iteration == 0
    again.close()
    run.close()  # the folder is free once every run of this kernel on it is closed
    assert _in_another_kernel(f"""
        import json
        from rlhf_lab.core.locks import FolderLock
        print(json.dumps(FolderLock({str(path)!r}, "the run").held))
    """) is True


def test_an_open_that_fails_holds_no_lock_though_its_traceback_is_kept(tmp_path, monkeypatch):
    """Jupyter keeps the last traceback, and with it the half-made run: the lock must not wait for it to go."""
    import pytest

    from rlhf_lab.loop import experiment

    path = tmp_path / "run"
    RLHFRun.create(path, demo_config(smoke=True), callbacks=[], log=None).close()

    def no_model(name):
        raise RuntimeError("the model could not be loaded")

    monkeypatch.setattr(experiment, "load_policy", no_model)
    with pytest.raises(RuntimeError, match="could not be loaded") as kept:
        RLHFRun.open(path, callbacks=[], log=None)
    assert kept.traceback  # the frames, and the half-made run in them, are still alive here
    assert _in_another_kernel(f"""
        import json
        from rlhf_lab.core.locks import FolderLock
        print(json.dumps(FolderLock({str(path)!r}, "the run").held))
    """) is True
