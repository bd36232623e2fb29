"""Matplotlib for the demo's sections: loaded on first use (headless), figures saved as PNG."""

from __future__ import annotations

from pathlib import Path


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


def save(fig, out: Path, name: str, pngs: list[Path] | None = None) -> str:
    """Write ``fig`` to ``out / name``, close it, record the path in ``pngs`` (where
    given); returns ``name``."""
    path = out / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    if pngs is not None:
        pngs.append(path)
    return name
