"""Write the project's repository URL (pyproject.toml, [project.urls] Repository) into every lesson's Colab badge,
Colab install cell and raw-file links (and the READMEs'), so the URL is changed in one place:
`python scripts/sync_urls.py [--root DIR]`.

Prints the notebooks it changed; exits 2 with one line when pyproject.toml has no GitHub Repository URL."""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

BADGE = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/")
INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+")
RAW = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/")


def repository(root: Path) -> tuple[str, str]:
    """(owner, name) of the GitHub repository named in `root`/pyproject.toml."""
    url = tomllib.loads((root / "pyproject.toml").read_text())["project"].get("urls", {}).get("Repository", "")
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)/?", url)
    if not match:
        raise ValueError(f"pyproject.toml's [project.urls] Repository must be https://github.com/OWNER/NAME, "
                         f"got {url!r}")
    return match.groups()


def sync(root: Path) -> list[Path]:
    """Rewrite the badges and install lines of `root`/notebooks/*.ipynb and the READMEs; returns the files changed."""
    owner, name = repository(root)
    changed = []
    pages = [root / "README.md", root / "notebooks" / "README.md"]
    for path in [*sorted((root / "notebooks").glob("*.ipynb")), *(p for p in pages if p.is_file())]:
        text = path.read_text()
        new = BADGE.sub(f"https://colab.research.google.com/github/{owner}/{name}/blob/main/notebooks/", text)
        new = INSTALL.sub(f"git+https://github.com/{owner}/{name}", new)
        new = RAW.sub(f"https://raw.githubusercontent.com/{owner}/{name}/", new)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    try:
        changed = sync(args.root)
    except (ValueError, FileNotFoundError) as err:
        print(f"sync_urls: error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
