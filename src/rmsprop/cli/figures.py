"""Matplotlib for the demo's sections: loaded on first use (headless), figures saved as PNG
with margins set in inches."""

from __future__ import annotations

from pathlib import Path

#: The space around and between a figure's plots, in inches: the tick labels and axis label
#: on the left and at the bottom, the title above, nothing on the right.
MARGINS = {"left": 0.8, "right": 0.15, "bottom": 0.6, "top": 0.4, "across": 0.75, "down": 0.55}


def pyplot():
    """``matplotlib.pyplot`` on the Agg back end; an ImportError that says what to install."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "rmsprop demo needs matplotlib: pip install matplotlib "
            "(in rmsprop's clone: pip install -e '.[demo]')"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def set_margins(fig) -> None:
    """Place the plots of ``fig`` (one grid of subplots) with ``MARGINS``. Set once instead
    of measured: matplotlib's tight layout and ``bbox_inches="tight"`` each lay the whole
    figure out an extra time to measure its labels, about half of a save's time
    (measured in BENCHMARKS.md, "A fresh install's first steps ... (issue 26)"); a test
    checks that the demo's figures hold every label."""
    width, height = fig.get_size_inches()
    rows, columns = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    m = MARGINS
    plot_width = (width - m["left"] - m["right"] - m["across"] * (columns - 1)) / columns
    plot_height = (height - m["bottom"] - m["top"] - m["down"] * (rows - 1)) / rows
    fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width,
                        bottom=m["bottom"] / height, top=1 - m["top"] / height,
                        wspace=m["across"] / plot_width, hspace=m["down"] / plot_height)  # fmt: skip


def save(fig, out: Path, name: str, pngs: list[Path] | None = None) -> str:
    """Write ``fig`` to ``out / name`` with ``set_margins``, close it, record the path in
    ``pngs`` (where given); returns ``name``."""
    path = out / name
    set_margins(fig)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    if pngs is not None:
        pngs.append(path)
    return name
