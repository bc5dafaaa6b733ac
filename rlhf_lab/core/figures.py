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
        return png_bytes(self, tight=True)


def png_bytes(figure, dpi: int = 100, tight: bool = False) -> bytes:
    """The figure as PNG bytes. tight: cropped to its drawn content (a second drawing pass, as a notebook's display
    makes); else one drawing, its layout engine placing the labels (what a live view shows after every update)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return buffer.getvalue()
