"""PNG figures of a reproduction run: one function per figure, each returns its path or None.

matplotlib's Figure API without pyplot: no global backend is chosen, so a notebook keeps its inline plots."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from specdiff2.report.claims import (
    diffuspec_variants,
    gamma_steps_cells,
    self_select_drafters,
    self_select_grid,
    variant_name,
)
from specdiff2.report.projection import alphas_of
from specdiff2.report.rundata import RunData, method_of


def _grid(n: int, w: float = 4.2, h: float = 3.4):
    fig = Figure(figsize=(w * n, h))
    return fig, fig.subplots(1, n, squeeze=False)[0]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def alpha_per_arm(run: RunData, out: Path) -> Path | None:
    """SpecDiff-2 Fig. 2: α_j (first j drafted tokens all accepted) per distillation arm, greedy."""
    sets = [s for s in run.sets() if run.select(sweep="arms", set=s, temperature=0.0)]
    if not sets:
        return None
    fig, axes = _grid(len(sets))
    for ax, s in zip(axes, sets):
        for r in run.select(sweep="arms", set=s, temperature=0.0):
            alphas = alphas_of(r)
            ax.plot(range(1, len(alphas) + 1), alphas, marker="o", ms=3,
                    label=f"{r['drafter']} (τ {r['mean_accept_len']:.2f})")
        ax.set(title=f"α_j per arm, {s}", xlabel="draft position j", ylabel="α_j", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    return _save(fig, out / "alpha_per_arm.png")


def tps_vs_k(run: RunData, out: Path) -> Path | None:
    """SpecDiff-2 Fig. 5: tok/s against K, one line per drafter temperature; one panel per set and drafter."""
    panels = [(s, d) for s in run.sets() for d in self_select_drafters(run, s)]
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    for ax, (s, d) in zip(axes, panels):
        grid = self_select_grid(run, s, d)
        for t in sorted({t for _, t in grid}):
            ks = sorted(k for k, tt in grid if tt == t)
            ax.plot(ks, [grid[(k, t)]["tokens_per_s"] for k in ks], marker="o", label=f"t={t:g}")
        ks = sorted({k for k, _ in grid})
        ax.set(title=f"self-selection, {s}, {d} drafter", xlabel="K drafts", ylabel=f"tok/s ({run.device})",
               xscale="log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xticks([], minor=True)  # a log axis spanning < 1 decade labels its minor ticks as 2x10^0 ...
        ax.legend(fontsize=7, title="drafter temp.")
    return _save(fig, out / "tps_vs_k.png")


def label_color(rgba) -> str:
    """Black on light cells (viridis' yellow end), white on dark ones: text that reads on any cell."""
    r, g, b = rgba[:3]
    return "k" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "w"  # relative luminance (sRGB weights)


def gamma_steps_heatmap(run: RunData, out: Path) -> Path | None:
    """SpecDiff: tok/s over γ × denoising steps T (τ written in each cell)."""
    sets = [s for s in run.sets() if run.select(sweep="specdiff_gamma_steps", set=s, temperature=0.0)]
    if not sets:
        return None
    fig, axes = _grid(len(sets), 4.8, 3.8)
    for ax, s in zip(axes, sets):
        cells = gamma_steps_cells(run, s)
        gammas, steps = sorted({g for g, _ in cells}), sorted({t for _, t in cells})
        grid = [[cells[(g, t)]["tokens_per_s"] if (g, t) in cells else float("nan") for t in steps] for g in gammas]
        im = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i, g in enumerate(gammas):
            for j, t in enumerate(steps):
                if (g, t) in cells:
                    ax.text(j, i, f"{grid[i][j]:.0f}\nτ{cells[(g, t)]['mean_accept_len']:.2f}", ha="center",
                            va="center", fontsize=7, color=label_color(im.cmap(im.norm(grid[i][j]))))
        ax.set_xticks(range(len(steps)), [str(t) for t in steps])
        ax.set_yticks(range(len(gammas)), [str(g) for g in gammas])
        ax.set(title=f"SpecDiff tok/s, {s}", xlabel="denoising steps T", ylabel="γ")
        fig.colorbar(im, ax=ax, label=f"tok/s ({run.device})")
    return _save(fig, out / "gamma_steps_heatmap.png")


def diffuspec_bars(run: RunData, out: Path) -> Path | None:
    """DiffuSpec ablation: speed-up over ar (τ on each bar) per variant."""
    sets = [s for s in run.sets() if diffuspec_variants(run, s)]
    if not sets:
        return None
    fig, axes = _grid(len(sets), 5.0, 3.6)
    for ax, s in zip(axes, sets):
        variants = diffuspec_variants(run, s)
        names = list(variants)
        values = [variants[n].get("speedup_ar", 0.0) for n in names]
        bars = ax.bar(range(len(names)), values, color="tab:blue")
        for b, n in zip(bars, names):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"τ{variants[n]['mean_accept_len']:.2f}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), [variant_name(n).replace(" ", "\n") for n in names], fontsize=6)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set(title=f"DiffuSpec ablation, {s}", ylabel="x ar (tok/s)")
    return _save(fig, out / "diffuspec_bars.png")


def accept_hist(run: RunData, out: Path) -> Path | None:
    """Accepted draft tokens per verifier step, as a share of steps, one line per method (greedy; per set the
    method's row with the most steps, its settings in the legend). The per-request histograms are in each
    generation row."""
    sets = [s for s in run.sets() if any(r.get("accept_hist") for r in run.select(set=s, temperature=0.0))]
    if not sets:
        return None
    fig, axes = _grid(len(sets))
    for ax, s in zip(axes, sets):
        best: dict[str, dict] = {}
        for r in run.select(set=s, temperature=0.0):
            name = method_of(r)  # one line per method, not per grid point
            if len(r.get("accept_hist", [])) > 1 and r["verifier_steps"] > best.get(name, {}).get("verifier_steps", -1):
                best[name] = r
        for name, r in best.items():
            hist = r["accept_hist"]
            total = max(1, sum(hist))
            ax.plot(range(len(hist)), [c / total for c in hist], marker="o", ms=3,
                    label=f"{r.get('method', name)} (τ {r['mean_accept_len']:.2f}, {r['verifier_steps']} steps)")
        ax.set(title=f"accepted drafts per step, {s}", xlabel="accepted draft tokens n", ylabel="share of steps")
        ax.legend(fontsize=6)
    return _save(fig, out / "accept_hist.png")


FIGURES = {"alpha_per_arm": alpha_per_arm, "accept_hist": accept_hist, "tps_vs_k": tps_vs_k, "gamma_steps_heatmap": gamma_steps_heatmap,
           "diffuspec_bars": diffuspec_bars}


def make_figures(run: RunData, out: Path) -> dict[str, Path]:
    made = {name: fn(run, out) for name, fn in FIGURES.items()}
    return {name: path for name, path in made.items() if path is not None}
