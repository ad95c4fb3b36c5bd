"""The sections of a run's report, each drawn from the run folder's own files (bench/,
train/, stages/, probe/, compare/): the report draws, it does not recompute."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..train.learning_check import LEVELS_NOTE, sentence
from .elements import array_img, composite, figure_img, file_img, html_table, pyplot, scaled


def data_section(store_path: Path) -> str:
    from ..data.store import ImageStore

    if not Path(store_path).exists():
        return "<p>No image store in this run.</p>"
    st = ImageStore(store_path)
    s = st.sites
    n, c, h, w = st.shape
    facts = pd.DataFrame(
        [
            ("sites", n),
            ("image size", f"{h} x {w}, {st.dtype}"),
            ("channels", ", ".join(st.channels)),
            ("plates", s["plate"].nunique()),
            ("wells", (s["plate"].astype(str) + s["well"].astype(str)).nunique()),
            ("batches", s["batch"].nunique()),
            ("control sites", int(s["is_control"].sum())),
            *[
                (f"{t} perturbations", s.loc[s["perturbation_type"] == t, "perturbation"].nunique())
                for t in sorted(s["perturbation_type"].astype(str).unique())
            ],
        ],
        columns=["", "value"],
    )
    picks = [int(np.flatnonzero(s["is_control"].to_numpy(bool))[0])] if s["is_control"].any() else []
    for t in ("gene", "compound"):
        idx = np.flatnonzero((s["perturbation_type"].astype(str) == t).to_numpy())
        picks += [int(i) for i in idx[:2]]
    picks = (picks or [0])[:4]
    scale = max(1, 160 // max(h, w))
    tiles = "".join(
        f"<figure>{array_img(composite(st.read(i), st.channels), f'composite of site {i}', scale)}"
        f"<figcaption>{html.escape(str(s['perturbation'].iloc[i]))} ({html.escape(str(s['batch'].iloc[i]))})</figcaption></figure>"
        for i in picks
    )
    site = st.read(picks[0])
    thumbs = "".join(
        f"<figure>{array_img(np.repeat(scaled(site[k])[..., None], 3, -1), f'channel {name}', scale, max_side=256)}"
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for k, name in enumerate(st.channels)
    )
    return (
        f"{html_table(facts)}<h3>Sample sites (all channels)</h3><div class=row>{tiles}</div>"
        f"<h3>Channels of the first sample site</h3><div class=row>{thumbs}</div>"
    )


PROBE_LABELS = {
    "probe/knn_perturbation": "kNN: which perturbation",
    "probe/logistic_control": "logistic: treated vs control",
    "probe/decoding_r2": "decoding R2 of the truth",
}
FLOOR_STYLE = {
    "train/trivial": ("trivial prediction", "#999999", ":"),
    "train/interpolation": ("interpolating the visible pixels", "#d8833b", "--"),
}


def training_section(encoders: dict[str, Path]) -> str:
    """Per trained encoder: the loss beside its trivial and interpolation levels, the
    learning check's verdict, and each probe over steps against its untrained value (step 0)."""
    plt = pyplot()
    curves, checks = {}, {}
    for name, d in encoders.items():
        f = d / "train" / "logs" / "metrics.csv"
        try:
            m = pd.read_csv(f)
        except (OSError, ValueError):  # not there, or a last line a kill cut short
            m = pd.DataFrame()
        if "train/loss" in m.columns:
            curves[name] = m
        c = d / "train" / "learning_check.json"
        if c.exists():
            checks[name] = json.loads(c.read_text())
    if not curves:
        return "<p>No encoder was trained in this run.</p>"
    probes = [k for k in PROBE_LABELS if any(k in m.columns for m in curves.values())]
    fig, axes = plt.subplots(
        1 + len(probes), len(curves), figsize=(4 * len(curves), 3 * (1 + len(probes))), squeeze=False
    )
    for j, (name, m) in enumerate(curves.items()):
        ax = axes[0][j]
        loss = m.dropna(subset=["train/loss"])
        ax.plot(loss["step"], loss["train/loss"], color="#3b7dd8", label="loss")
        for key, (label, color, style) in FLOOR_STYLE.items():
            if key in m.columns and m[key].notna().any():
                ax.axhline(m[key].mean(), color=color, linestyle=style, label=label)
        ax.set_title(f"{name}: {checks[name]['verdict']}" if name in checks else name, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
        for i, key in enumerate(probes, 1):
            _probe_axis(axes[i][j], m, key)
    fig.tight_layout()
    previews = _previews(encoders)
    lines = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(sentence(c))}</li>" for n, c in checks.items())
    check_html = f"<h3>Learning check</h3><ul>{lines}</ul><p>{html.escape(LEVELS_NOTE)}</p>" if lines else ""
    return (
        check_html
        + figure_img(fig, "training curves and probes")
        + (
            f"<h3>Reconstructions (training crops, last preview)</h3><div class=row>{previews}</div>"
            if previews
            else ""
        )
    )


def _probe_axis(ax, m: pd.DataFrame, key: str) -> None:
    """One probe over training steps, beside its untrained value and chance."""
    ax.set_ylabel(PROBE_LABELS[key], fontsize=8)
    ax.set_xlabel("step")
    if key not in m.columns or not m[key].notna().any():
        ax.set_axis_off()
        return
    pr = m.dropna(subset=[key])
    ax.plot(pr["step"], pr[key], marker="o", color="#3b7dd8", label="probe")
    ax.axhline(pr[key].iloc[0], color="#999999", linestyle=":", label="untrained (step 0)")
    if key == "probe/knn_perturbation" and "probe/knn_chance" in pr:
        ax.axhline(pr["probe/knn_chance"].iloc[0], color="#c44", linestyle="--", label="chance")
    if key == "probe/logistic_control":
        ax.axhline(0.5, color="#c44", linestyle="--", label="chance")
    ax.legend(fontsize=7)


def _previews(encoders: dict[str, Path]) -> str:
    """Each encoder's last training preview."""
    previews = ""
    for name, d in encoders.items():
        pngs = sorted((d / "train" / "previews").glob("step*.png"))
        if pngs:
            kind = "masked input | reconstruction | target" if _reconstructs(d) else "panels"
            previews += (
                f"<figure>{file_img(pngs[-1], f'reconstructions of {name}', 600)}"
                f"<figcaption>{html.escape(name)}, {pngs[-1].stem}: {kind}; one row per channel</figcaption></figure>"
            )
    return previews


def _reconstructs(encoder_dir: Path) -> bool:
    """Whether the encoder's preset is a masked model (its training config names the preset)."""
    from ..models.registry import PRESETS, preset_info

    cfg = encoder_dir / "train" / "config.json"
    model = json.loads(cfg.read_text()).get("train", {}).get("model") if cfg.exists() else None
    return model in PRESETS and preset_info(model).reconstructs


def recall_wide(table: pd.DataFrame) -> pd.DataFrame:
    """A recall table (recall.csv's columns) as encoders (rows) by sources (columns), each
    cell the recall with its interval, then the random and pair-count rows: what the page and
    the console show."""
    from ..bench.summary import fmt

    if not len(table):
        return table
    shown = table.assign(
        shown=[fmt(v, lo, hi) for v, lo, hi in zip(table["recall"], table["ci_low"], table["ci_high"])]
    )
    wide = shown.pivot_table(
        index="encoder", columns="source", values="shown", sort=False, aggfunc="first"
    ).reset_index()
    rnd = table.groupby("source", sort=False)["random"].first()
    pairs = table.groupby("source", sort=False)["n_pairs"].first()
    extra = [
        {"encoder": "random", **{k: f"{v:.3f}" for k, v in rnd.items()}},
        {"encoder": "pairs in map", **{k: str(int(v)) for k, v in pairs.items()}},
    ]
    return pd.concat([wide, pd.DataFrame(extra)], ignore_index=True)


def recall_figure(table: pd.DataFrame) -> str:
    plt = pyplot()
    if not len(table):
        return ""
    sources = list(dict.fromkeys(table["source"]))
    encs = list(dict.fromkeys(table["encoder"]))
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.35 * len(sources) * len(encs) + 2)), 3.8))
    width = 0.8 / len(encs)
    for k, e in enumerate(encs):
        r = table[table["encoder"] == e].set_index("source").reindex(sources)
        err = np.vstack([(r["recall"] - r["ci_low"]).clip(lower=0), (r["ci_high"] - r["recall"]).clip(lower=0)]).astype(
            float
        )
        ax.bar(
            np.arange(len(sources)) + k * width - 0.4 + width / 2,
            r["recall"],
            width,
            yerr=np.nan_to_num(err),
            capsize=2,
            label=e,
            error_kw={"elinewidth": 0.8, "ecolor": "#444"},
        )
    rnd = table.groupby("source", sort=False)["random"].first().reindex(sources)
    for i, v in enumerate(rnd):
        ax.hlines(v, i - 0.45, i + 0.45, colors="crimson", linestyles="--", label="random" if i == 0 else None)
    ax.set_xticks(np.arange(len(sources)), sources)
    ax.set_ylabel("recall (5% / 95%), 95% CI")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return figure_img(fig, "recall per source and encoder")


def distributions_figure(encoders: dict[str, Path]) -> str:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    shown = False
    for name, d in encoders.items():
        c, m = d / "bench" / "consistency.csv", d / "bench" / "magnitude.csv"
        if c.exists():
            v = pd.read_csv(c)["consistency"].dropna()
            if len(v):
                a.hist(v, bins=30, histtype="step", label=name, density=True)
                shown = True
        if m.exists():
            v = pd.read_csv(m)
            v = np.log10(np.maximum(v["energy_distance"] / np.maximum(v["null_mean"], 1e-12), 1e-3)).dropna()
            if len(v):
                b.hist(v, bins=30, histtype="step", label=name, density=True)
    if not shown:
        pyplot().close(fig)
        return "<p>No replicate-level results.</p>"
    a.set_xlabel("replicate consistency (mean cosine between replicate wells)")
    a.axvline(0, color="crimson", ls="--", lw=1)
    b.set_xlabel("magnitude: log10(energy distance / its null mean)")
    b.axvline(0, color="crimson", ls="--", lw=1)
    a.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return figure_img(fig, "consistency and magnitude distributions")


def summary_table(encoders: dict[str, Path], results: dict, seconds: dict[str, float]) -> pd.DataFrame:
    """Every headline metric (rows) of every encoder (columns) with its interval, the random
    map's value in the last column; then dims and cost."""
    from ..bench.summary import fmt, headline_metrics

    names = [n for n in encoders if n in results]
    if not names:
        return pd.DataFrame()
    rows = []
    for h in headline_metrics():
        cells = {n: results[n].estimates.get(h.metric) for n in names}
        if not any(cells.values()):
            continue
        rnd = next((results[n].random_of(h) for n in names if cells[n]), None)
        rows.append(
            {
                "metric": h.label,
                **{n: fmt(e["value"], e["ci_low"], e["ci_high"]) if e else "n/a" for n, e in cells.items()},
                "random": "" if rnd is None else f"{rnd:.3f}",
            }
        )
    dims = {}
    for n in names:
        emb = encoders[n] / "embeddings.h5ad"
        if emb.exists():
            import h5py

            with h5py.File(emb, "r") as f:
                dims[n] = str(int(f["X"].shape[1]))
    rows.append({"metric": "embedding dimensions", **{n: dims.get(n, "") for n in names}, "random": ""})
    rows.append(
        {
            "metric": "train + embed seconds",
            **{n: f"{seconds.get(f'train:{n}', 0) + seconds.get(f'embed:{n}', 0):.1f}" for n in names},
            "random": "",
        }
    )
    return pd.DataFrame(rows)


def _run_table(path: Path) -> pd.DataFrame | None:
    """A run's CSV of paired rows (paired.csv, ladder.csv), or None when absent or empty."""
    if not path.exists():
        return None
    t = pd.read_csv(path)
    return t if len(t) else None


def _difference_columns(t: pd.DataFrame) -> dict:
    """'difference [95% CI]' and 'units' (how many units the jackknife left out, and what) of paired rows."""
    from ..bench.summary import fmt, units_label

    units = t.get("unit", pd.Series("", index=t.index))  # paired.csv of older runs has no unit column
    return {
        "difference [95% CI]": [fmt(d, lo, hi) for d, lo, hi in zip(t["difference"], t["ci_low"], t["ci_high"])],
        "units": [units_label(n, u) for n, u in zip(t["n_units"], units)],
    }


def paired_section(run_dir: Path) -> str:
    t = _run_table(run_dir / "paired.csv")
    if t is None:
        return ""
    show = pd.DataFrame(
        {
            "encoder - baseline": t["encoder"] + " - " + t["baseline"],
            "metric": t["label"],
            "encoder": t["a"],
            "baseline": t["b"],
            **_difference_columns(t),
            "": t["note"].fillna(""),
        }
    )
    return (
        "<h2>Each encoder against its baseline, paired</h2><p>The same genes (perturbations, compounds) scored in both maps: the "
        "jackknife replicates of the difference are the differences of the replicates, so the interval is the paired one; "
        "'units' says what the jackknife leaves out, one at a time, and how many (clusters of genes that share biology). "
        "A difference inside its interval is not evidence of a difference.</p>" + html_table(show)
    )


def ladder_section(run_dir: Path) -> str:
    """ladder.csv: one verdict line per learned encoder, then every rung and metric."""
    from ..bench.ladder import verdicts

    t = _run_table(run_dir / "ladder.csv")
    if t is None:
        return ""
    show = pd.DataFrame(
        {
            "encoder": t["encoder"],
            "rung": t["rung"] + " (" + t["other"] + ")",
            "metric": t["label"],
            **_difference_columns(t),
        }
    )
    lines = "".join(f"<li>{html.escape(v)}</li>" for v in verdicts(t))
    return (
        "<h2>The ladder</h2><p>Each learned encoder against its untrained twin, the strongest untrained encoder (named in "
        "the config, chosen on another screen), the hand-crafted features (paired differences: a rung is reached where "
        "the interval lies above 0) and the oracle (the fraction of its distance from random the encoder covers).</p>"
        f"<ul>{lines}</ul>" + html_table(show)
    )


BUDGET_METRICS = {
    "decoding_r2": "decoding R2",
    "truth_cosine_spearman": "cosine correlation with the truth",
    "recall/CORUM/5": "CORUM recall",
}


def training_flops(encoder_dir: Path) -> float | None:
    """Counted training FLOPs of an encoder of a run (train/resources.json), None if untrained."""
    f = Path(encoder_dir) / "train" / "resources.json"
    return json.loads(f.read_text()).get("training_flops") if f.exists() else None


def budget_figure(paired: pd.DataFrame, flops: dict, baseline: str):
    """Paired differences from one baseline (the untrained twin) against counted training FLOPs,
    one point per encoder with its 95% interval: where the gap to the floor closes, if it does."""
    plt = pyplot()
    rows = paired[
        (paired["baseline"] == baseline)
        & paired["encoder"].isin(list(flops))
        & paired["metric"].isin(list(BUDGET_METRICS))
    ]
    metrics = [m for m in BUDGET_METRICS if m in set(rows["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        r = rows[rows["metric"] == m].assign(flops=lambda d: d["encoder"].map(flops)).sort_values("flops")
        ax.axhline(0, color="0.5", lw=1, ls="--")
        ax.errorbar(
            r["flops"],
            r["difference"],
            yerr=[r["difference"] - r["ci_low"], r["ci_high"] - r["difference"]],
            fmt="o-",
            capsize=3,
            color="C0",
        )
        for x, y, n in zip(r["flops"], r["difference"], r["encoder"]):
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training FLOPs (log scale)")
        ax.set_title(f"{BUDGET_METRICS[m]}: trained - {baseline}", fontsize=9)
    fig.tight_layout()
    return fig


def budget_section(run_dir: Path, encoders: dict) -> str:
    """The budget figure for every baseline that three or more trained encoders are paired with."""
    f = run_dir / "paired.csv"
    if not f.exists():
        return ""
    paired = pd.read_csv(f)
    out = ""
    for baseline, group in paired.groupby("baseline", sort=False):
        flops = {n: training_flops(encoders[n]) for n in group["encoder"].unique() if n in encoders}
        flops = {n: v for n, v in flops.items() if v}
        if len(set(flops.values())) >= 3:
            out += figure_img(
                budget_figure(paired, flops, baseline),
                f"paired differences from {baseline} against training FLOPs",
                1000,
            )
    if not out:
        return ""
    return (
        "<h3>Against the training budget</h3><p>Each trained encoder's paired difference from its baseline (the untrained twin) "
        "against the FLOPs its training counted, with 95% intervals; encoders of one recipe at several budgets trace its scaling "
        "curve. Above the dashed line beyond the interval is learning that shows in the map.</p>" + out
    )


def bench_cost_section(results: dict) -> str:
    """What each metric of each encoder's bench cost: seconds / peak resident MB."""
    costs = {n: r.cost() for n, r in results.items() if r.cost()}
    if not costs:
        return ""
    keys = list(dict.fromkeys(k for c in costs.values() for k in c))
    rows = [
        {
            "metric": k,
            **{
                n: f"{c[k]['seconds']:.1f} s / {c[k]['peak_rss_mb']:,.0f} MB" if k in c else ""
                for n, c in costs.items()
            },
        }
        for k in keys
    ]
    return (
        "<h3>What the bench cost</h3><p>Wall seconds and the peak resident memory of the bench process while each metric ran "
        "(<code>read</code>: reading the map and wells; <code>total</code>: the whole bench).</p>"
        + html_table(pd.DataFrame(rows))
    )


def skipped_section(results: dict) -> str:
    rows = [{"encoder": n, "metric": k, "why": v} for n, r in results.items() for k, v in r.skipped().items()]
    return ("<h3>Metrics that could not run</h3>" + html_table(pd.DataFrame(rows))) if rows else ""


def split_note(split: dict) -> str:
    """What the maps were scored on, when the run held part of the screen out of training."""
    by = split.get("by", "none")
    if by == "none":
        return "<p>Every model trained on the whole screen; maps are made of all of it.</p>"
    part = "perturbations (and the controls)" if by == "perturbations" else "wells of every perturbation"
    return (
        f"<p><b>Split by {html.escape(by)}</b> (seed {split.get('seed', 0)}): {split.get('fraction', 0.5):.0%} of the {part} were held out "
        "of every model's training, and every map below, of every encoder, is made and scored on that held-out part only.</p>"
    )
