"""A matplotlib Figure that shows itself in Jupyter, with no pyplot and no backend set up.

A bare `matplotlib.figure.Figure` returned from a notebook cell displays as text ("<Figure size 1100x380 ...>")
unless the kernel happened to import pyplot (which registers the inline backend's image formatter). Every plot of
the lab is made as this subclass, whose `_repr_png_` renders it, so it shows in JupyterLab, Colab, Voila and
papermill outputs alike; where the inline backend is active its formatter is used instead (one image, not two).
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure as _MatplotlibFigure

__all__ = ["Figure", "png_bytes"]


class Figure(_MatplotlibFigure):
    """`matplotlib.figure.Figure` plus `_repr_png_` (see the module docstring)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def png_bytes(figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes in one drawing (its layout engine places the labels; no tight-box second pass):
    what a live view shows after every update."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
