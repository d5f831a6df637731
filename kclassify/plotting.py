"""One headless matplotlib figure helper for every plot kclassify draws (tuning and evaluation)."""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def figure(path: Path, xlabel: str = "", ylabel: str = "", *, size=(6.4, 4.4), columns: int = 1,
           grid: bool = True):
    """A headless matplotlib axis (a list of ``columns`` axes when more than one), saved to ``path``
    when the block ends, each axis with the labels, a light grid and a legend when it has labelled lines.

    The Agg backend is chosen here, not at import, so a plot never needs a display (CI, servers).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size, dpi=110, squeeze=False)
    axes = list(axes[0])
    try:
        yield axes[0] if columns == 1 else axes
        for ax in axes:
            if xlabel:
                ax.set_xlabel(xlabel)
            if ylabel and ax is axes[0]:
                ax.set_ylabel(ylabel)
            if grid:
                ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
