"""The inspection's figures (as Glocker et al.'s): projections coloured by subgroup, and each mode's marginal
density per subgroup. Drawn like the audit's (``fairscan.report._plots``: no pyplot, SVG data URIs); the
scatter points are rasterised inside the SVG so that thousands of rows keep the page small."""

from __future__ import annotations

import numpy as np

from fairscan.report._plots import _RC, PALETTE, _data_uri, _figure

MAX_POINTS = 5000  # a scatter panel draws at most this many rows (a seeded sample), all rows in the densities


def _grouping_title(g) -> str:
    return f"{g.column} (1 vs 0)" if g.attr == "label" else g.attr


def _projections(result) -> list[tuple[str, str, np.ndarray]]:
    """(x label, y label, points) per projection panel: modes 1-2, 3-4, ... and the t-SNE if computed."""
    out = []
    for m in range(0, result.modes - 1, 2):
        xy = result.projection[:, m : m + 2]
        out.append((result.mode_names[m], result.mode_names[m + 1], xy))
        if len(out) == 2:
            break
    if result.tsne is not None:
        out.append(("t-SNE 1", "t-SNE 2", result.tsne))
    return out


def projection_figure(result, seed: int = 0) -> str | None:
    """One row per attribute (and label), one column per projection; None when there is no 2-D projection."""
    import matplotlib

    panels = _projections(result)
    if not panels:
        return None
    rows = result.groupings
    shown = np.arange(result.rows)
    if result.rows > MAX_POINTS:
        shown = np.sort(np.random.default_rng(seed).choice(result.rows, MAX_POINTS, replace=False))
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        fig = _figure(3.3 * len(panels) + 1.4, 3.1 * len(rows))
        axes = np.atleast_2d(fig.subplots(len(rows), len(panels), squeeze=False))
        fig.subplots_adjust(left=0.07, right=0.86, bottom=0.06, top=0.95, wspace=0.3, hspace=0.45)
        for r, g in enumerate(rows):
            for c, (xl, yl, xy) in enumerate(panels):
                ax = axes[r, c]
                for j, name in enumerate(g.groups):
                    pick = shown[g.codes[shown] == j]
                    ax.scatter(
                        xy[pick, 0],
                        xy[pick, 1],
                        s=5,
                        alpha=0.5,
                        lw=0,
                        color=PALETTE[j % len(PALETTE)],
                        label=name,
                        rasterized=True,
                    )
                ax.set_xlabel(xl)
                ax.set_ylabel(yl)
                ax.set_title(_grouping_title(g), fontsize=9)
            axes[r, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, markerscale=2.5)
        return _data_uri(fig)


def density_figure(result) -> str:
    """One row per attribute (and label), one column per mode: each subgroup's kernel density estimate."""
    import matplotlib
    from scipy.stats import gaussian_kde

    rows = result.groupings
    with matplotlib.rc_context(_RC):
        fig = _figure(2.5 * result.modes + 1.4, 2.2 * len(rows))
        axes = fig.subplots(len(rows), result.modes, squeeze=False)
        fig.subplots_adjust(left=0.06, right=0.88, bottom=0.09, top=0.92, wspace=0.3, hspace=0.6)
        for m in range(result.modes):
            x = result.projection[:, m]
            grid = np.linspace(x.min(), x.max(), 200)
            for r, g in enumerate(rows):
                ax = axes[r, m]
                for j, name in enumerate(g.groups):
                    v = x[g.codes == j]
                    color = PALETTE[j % len(PALETTE)]
                    if len(v) > 1 and np.ptp(v) > 0:
                        dens = gaussian_kde(v)(grid)
                        ax.fill_between(grid, dens, alpha=0.2, color=color, lw=0)
                        ax.plot(grid, dens, color=color, lw=1.2, label=name)
                ax.set_yticks([])
                ax.set_title(f"{result.mode_names[m]}: {_grouping_title(g)}", fontsize=8.5)
                if m == result.modes - 1:
                    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
        return _data_uri(fig)
