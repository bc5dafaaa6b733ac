"""rlhf-lab: a workbench for learning and researching RLHF.

The headless core: importable with no Jupyter running. The notebook UI lives in `rlhf_lab.ui` and only calls the core.
"""

__version__ = "0.1.0"
