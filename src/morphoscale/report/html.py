"""`morphoscale report RUN_DIR`: one self-contained HTML page of a run folder.

Every figure is a PNG embedded as a data URI, so the file can be mailed or opened offline.
Numbers come from the run's own tables (bench/*.csv, recall.csv): the report draws, it does
not recompute."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .. import __version__
from ..errors import InputError
from ..train.learning_check import LEVELS_NOTE, sentence

PALETTE = {"DNA": (0.2, 0.4, 1.0), "ER": (0.1, 1.0, 0.2), "RNA": (1.0, 1.0, 0.1), "AGP": (1.0, 0.2, 0.2), "Actin": (1.0, 0.2, 0.2),
           "Mito": (1.0, 0.3, 1.0), "Golgi": (1.0, 0.6, 0.1)}
FALLBACK = [(0.2, 0.4, 1.0), (0.1, 1.0, 0.2), (1.0, 0.2, 0.2), (1.0, 1.0, 0.1), (1.0, 0.3, 1.0), (0.1, 1.0, 1.0)]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(data: bytes, alt: str, width: int | None = None) -> str:
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _fig(fig, alt: str, width: int | None = None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return _png(buf.getvalue(), alt, width)


def _file_img(path: Path, alt: str, width: int | None = None) -> str:
    return _png(Path(path).read_bytes(), alt, width) if Path(path).exists() else ""


def _array_img(rgb: np.ndarray, alt: str, scale: int = 1, max_side: int = 512) -> str:
    from PIL import Image

    im = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    if max(im.size) > max_side:  # a microscope field: shown smaller, the file stays small
        f = max_side / max(im.size)
        im = im.resize((round(im.width * f), round(im.height * f)), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return _png(buf.getvalue(), alt)


def _table(df: pd.DataFrame, digits: int = 3) -> str:
    """A table with `digits` decimals, except counts: a column of whole numbers (pairs, wells;
    float only because a cell is missing) is written without decimals, not 50.000."""
    df = df.map(lambda v: np.nan if v is None else v).infer_objects()
    for col in df.columns:
        vals = df[col]
        if pd.api.types.is_float_dtype(vals) and vals.notna().any() and (vals.dropna() % 1 == 0).all() and (vals.dropna().abs() > 1).any():
            df[col] = vals.map(lambda v: "n/a" if pd.isna(v) else str(int(v)))
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0, classes="t", na_rep="n/a")


# --- sections -------------------------------------------------------------------------


def _scaled(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [1, 99.5])
    return np.clip((x.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def composite(site: np.ndarray, channels: list[str]) -> np.ndarray:
    """Additive colour composite of all channels (C, H, W) -> (H, W, 3)."""
    rgb = np.zeros((*site.shape[1:], 3), np.float32)
    for k, name in enumerate(channels):
        rgb += _scaled(site[k])[..., None] * np.asarray(PALETTE.get(name, FALLBACK[k % len(FALLBACK)]), np.float32)
    return np.clip(rgb / max(1.0, len(channels) / 3), 0, 1)


def data_section(store_path: Path) -> str:
    from ..data.store import ImageStore

    if not Path(store_path).exists():
        return "<p>No image store in this run.</p>"
    st = ImageStore(store_path)
    s = st.sites
    n, c, h, w = st.shape
    facts = pd.DataFrame([
        ("sites", n), ("image size", f"{h} x {w}, {st.dtype}"), ("channels", ", ".join(st.channels)),
        ("plates", s["plate"].nunique()), ("wells", (s["plate"].astype(str) + s["well"].astype(str)).nunique()),
        ("batches", s["batch"].nunique()), ("control sites", int(s["is_control"].sum())),
        *[(f"{t} perturbations", s.loc[s["perturbation_type"] == t, "perturbation"].nunique()) for t in sorted(s["perturbation_type"].astype(str).unique())],
    ], columns=["", "value"])
    picks = [int(np.flatnonzero(s["is_control"].to_numpy(bool))[0])] if s["is_control"].any() else []
    for t in ("gene", "compound"):
        idx = np.flatnonzero((s["perturbation_type"].astype(str) == t).to_numpy())
        picks += [int(i) for i in idx[:2]]
    picks = (picks or [0])[:4]
    scale = max(1, 160 // max(h, w))
    tiles = "".join(f'<figure>{_array_img(composite(st.read(i), st.channels), f"composite of site {i}", scale)}'
                    f"<figcaption>{html.escape(str(s['perturbation'].iloc[i]))} ({html.escape(str(s['batch'].iloc[i]))})</figcaption></figure>" for i in picks)
    site = st.read(picks[0])
    thumbs = "".join(f"<figure>{_array_img(np.repeat(_scaled(site[k])[..., None], 3, -1), f'channel {name}', scale, max_side=256)}<figcaption>{html.escape(name)}</figcaption></figure>"
                     for k, name in enumerate(st.channels))
    return f"{_table(facts)}<h3>Sample sites (all channels)</h3><div class=row>{tiles}</div><h3>Channels of the first sample site</h3><div class=row>{thumbs}</div>"


PROBE_LABELS = {"probe/knn_perturbation": "kNN: which perturbation", "probe/logistic_control": "logistic: treated vs control",
                "probe/decoding_r2": "decoding R2 of the truth"}
FLOOR_STYLE = {"train/trivial": ("trivial prediction", "#999999", ":"), "train/interpolation": ("interpolating the visible pixels", "#d8833b", "--")}


def training_section(encoders: dict[str, Path]) -> str:
    """Per trained encoder: the loss beside its trivial and interpolation levels, the
    learning check's verdict, and each probe over steps against its untrained value (step 0)."""
    plt = _plt()
    curves, checks = {}, {}
    for name, d in encoders.items():
        f = d / "train" / "logs" / "metrics.csv"
        if f.exists():
            m = pd.read_csv(f)
            if "train/loss" in m.columns:
                curves[name] = m
        c = d / "train" / "learning_check.json"
        if c.exists():
            checks[name] = json.loads(c.read_text())
    if not curves:
        return "<p>No encoder was trained in this run.</p>"
    probes = [k for k in PROBE_LABELS if any(k in m.columns for m in curves.values())]
    fig, axes = plt.subplots(1 + len(probes), len(curves), figsize=(4 * len(curves), 3 * (1 + len(probes))), squeeze=False)
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
            ax = axes[i][j]
            ax.set_ylabel(PROBE_LABELS[key], fontsize=8)
            ax.set_xlabel("step")
            if key not in m.columns or not m[key].notna().any():
                ax.set_axis_off()
                continue
            pr = m.dropna(subset=[key])
            ax.plot(pr["step"], pr[key], marker="o", color="#3b7dd8", label="probe")
            ax.axhline(pr[key].iloc[0], color="#999999", linestyle=":", label="untrained (step 0)")
            if key == "probe/knn_perturbation" and "probe/knn_chance" in pr:
                ax.axhline(pr["probe/knn_chance"].iloc[0], color="#c44", linestyle="--", label="chance")
            if key == "probe/logistic_control":
                ax.axhline(0.5, color="#c44", linestyle="--", label="chance")
            ax.legend(fontsize=7)
    fig.tight_layout()
    previews = ""
    for name, d in encoders.items():
        pngs = sorted((d / "train" / "previews").glob("step*.png"))
        if pngs:
            kind = "masked input | reconstruction | target" if "mae" in name.lower() or "mu" in name.lower() else "panels"
            previews += f"<figure>{_file_img(pngs[-1], f'reconstructions of {name}', 600)}<figcaption>{html.escape(name)}, {pngs[-1].stem}: {kind}; one row per channel</figcaption></figure>"
    lines = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(sentence(c))}</li>" for n, c in checks.items())
    check_html = f"<h3>Learning check</h3><ul>{lines}</ul><p>{html.escape(LEVELS_NOTE)}</p>" if lines else ""
    return check_html + _fig(fig, "training curves and probes") + (f"<h3>Reconstructions (training crops, last preview)</h3><div class=row>{previews}</div>" if previews else "")


def recall_figure(table: pd.DataFrame) -> str:
    plt = _plt()
    if not len(table):
        return ""
    sources = list(dict.fromkeys(table["source"]))
    encs = list(dict.fromkeys(table["encoder"]))
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.35 * len(sources) * len(encs) + 2)), 3.8))
    width = 0.8 / len(encs)
    for k, e in enumerate(encs):
        r = table[table["encoder"] == e].set_index("source").reindex(sources)
        err = np.vstack([(r["recall"] - r["ci_low"]).clip(lower=0), (r["ci_high"] - r["recall"]).clip(lower=0)]).astype(float)
        ax.bar(np.arange(len(sources)) + k * width - 0.4 + width / 2, r["recall"], width, yerr=np.nan_to_num(err), capsize=2, label=e,
               error_kw={"elinewidth": 0.8, "ecolor": "#444"})
    rnd = table.groupby("source", sort=False)["random"].first().reindex(sources)
    for i, v in enumerate(rnd):
        ax.hlines(v, i - 0.45, i + 0.45, colors="crimson", linestyles="--", label="random" if i == 0 else None)
    ax.set_xticks(np.arange(len(sources)), sources)
    ax.set_ylabel("recall (5% / 95%), 95% CI")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _fig(fig, "recall per source and encoder")


def distributions_figure(encoders: dict[str, Path]) -> str:
    plt = _plt()
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
        _plt().close(fig)
        return "<p>No replicate-level results.</p>"
    a.set_xlabel("replicate consistency (mean cosine between replicate wells)")
    a.axvline(0, color="crimson", ls="--", lw=1)
    b.set_xlabel("magnitude: log10(energy distance / its null mean)")
    b.axvline(0, color="crimson", ls="--", lw=1)
    a.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return _fig(fig, "consistency and magnitude distributions")


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
        rows.append({"metric": h.label, **{n: fmt(e["value"], e["ci_low"], e["ci_high"]) if e else "n/a" for n, e in cells.items()},
                     "random": "" if rnd is None else f"{rnd:.3f}"})
    dims = {}
    for n in names:
        emb = encoders[n] / "embeddings.h5ad"
        if emb.exists():
            import h5py

            with h5py.File(emb, "r") as f:
                dims[n] = str(int(f["X"].shape[1]))
    rows.append({"metric": "embedding dimensions", **{n: dims.get(n, "") for n in names}, "random": ""})
    rows.append({"metric": "train + embed seconds", **{n: f"{seconds.get(f'train:{n}', 0) + seconds.get(f'embed:{n}', 0):.1f}" for n in names}, "random": ""})
    return pd.DataFrame(rows)


def paired_section(run_dir: Path) -> str:
    from ..bench.summary import fmt

    f = run_dir / "paired.csv"
    if not f.exists():
        return ""
    t = pd.read_csv(f)
    if not len(t):
        return ""
    show = pd.DataFrame({"encoder - baseline": t["encoder"] + " - " + t["baseline"], "metric": t["label"], "encoder": t["a"], "baseline": t["b"],
                         "difference [95% CI]": [fmt(d, lo, hi) for d, lo, hi in zip(t["difference"], t["ci_low"], t["ci_high"])], "": t["note"].fillna("")})
    return ("<h2>Each encoder against its baseline, paired</h2><p>The same genes (perturbations, compounds) scored in both maps: the "
            "jackknife replicates of the difference are the differences of the replicates, so the interval is the paired one. "
            "A difference inside its interval is not evidence of a difference.</p>" + _table(show))


BUDGET_METRICS = {"decoding_r2": "decoding R2", "truth_cosine_spearman": "cosine correlation with the truth", "recall/CORUM/5": "CORUM recall"}


def training_flops(encoder_dir: Path) -> float | None:
    """Counted training FLOPs of an encoder of a run (train/resources.json), None if untrained."""
    f = Path(encoder_dir) / "train" / "resources.json"
    return json.loads(f.read_text()).get("training_flops") if f.exists() else None


def budget_figure(paired: pd.DataFrame, flops: dict, baseline: str):
    """Paired differences from one baseline (the untrained twin) against counted training FLOPs,
    one point per encoder with its 95% interval: where the gap to the floor closes, if it does."""
    plt = _plt()
    rows = paired[(paired["baseline"] == baseline) & paired["encoder"].isin(list(flops)) & paired["metric"].isin(list(BUDGET_METRICS))]
    metrics = [m for m in BUDGET_METRICS if m in set(rows["metric"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        r = rows[rows["metric"] == m].assign(flops=lambda d: d["encoder"].map(flops)).sort_values("flops")
        ax.axhline(0, color="0.5", lw=1, ls="--")
        ax.errorbar(r["flops"], r["difference"], yerr=[r["difference"] - r["ci_low"], r["ci_high"] - r["difference"]], fmt="o-", capsize=3, color="C0")
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
            out += _fig(budget_figure(paired, flops, baseline), f"paired differences from {baseline} against training FLOPs", 1000)
    if not out:
        return ""
    return ("<h3>Against the training budget</h3><p>Each trained encoder's paired difference from its baseline (the untrained twin) "
            "against the FLOPs its training counted, with 95% intervals; encoders of one recipe at several budgets trace its scaling "
            "curve. Above the dashed line beyond the interval is learning that shows in the map.</p>" + out)


def bench_cost_section(results: dict) -> str:
    """What each metric of each encoder's bench cost: seconds / peak resident MB."""
    costs = {n: r.cost() for n, r in results.items() if r.cost()}
    if not costs:
        return ""
    keys = list(dict.fromkeys(k for c in costs.values() for k in c))
    rows = [{"metric": k, **{n: f"{c[k]['seconds']:.1f} s / {c[k]['peak_rss_mb']:,.0f} MB" if k in c else "" for n, c in costs.items()}} for k in keys]
    return ("<h3>What the bench cost</h3><p>Wall seconds and the peak resident memory of the bench process while each metric ran "
            "(<code>read</code>: reading the map and wells; <code>total</code>: the whole bench).</p>" + _table(pd.DataFrame(rows)))


def skipped_section(results: dict) -> str:
    rows = [{"encoder": n, "metric": k, "why": v} for n, r in results.items() for k, v in r.skipped().items()]
    return ("<h3>Metrics that could not run</h3>" + _table(pd.DataFrame(rows))) if rows else ""


def split_note(split: dict) -> str:
    """What the maps were scored on, when the run held part of the screen out of training."""
    by = split.get("by", "none")
    if by == "none":
        return "<p>Every model trained on the whole screen; maps are made of all of it.</p>"
    part = "perturbations (and the controls)" if by == "perturbations" else "wells of every perturbation"
    return (f"<p><b>Split by {html.escape(by)}</b> (seed {split.get('seed', 0)}): {split.get('fraction', 0.5):.0%} of the {part} were held out "
            "of every model's training, and every map below, of every encoder, is made and scored on that held-out part only.</p>")


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    cfg_file = run_dir / "run.yaml"
    if not cfg_file.exists():
        raise InputError(f"{run_dir}: not a run folder (no run.yaml; make one with `morphoscale run`)")
    cfg = yaml.safe_load(cfg_file.read_text())
    names = [e["name"] for e in cfg.get("encoders", [])]
    encoders = {n: run_dir / "encoders" / n for n in names if (run_dir / "encoders" / n).exists()}
    stages = {}
    for f in sorted((run_dir / "stages").glob("*.json")):
        rec = json.loads(f.read_text())
        stages[f.stem.replace("--", ":")] = rec
    seconds = {k: v.get("seconds", 0.0) for k, v in stages.items()}
    store = Path(cfg["data"]["store"]) if cfg["data"].get("store") else run_dir / "store.zarr"

    from ..bench.summary import fmt, recall_table, run_results

    results = run_results(run_dir, list(encoders))
    table = recall_table(results)
    if len(table):
        table["shown"] = [fmt(v, lo, hi) for v, lo, hi in zip(table["recall"], table["ci_low"], table["ci_high"])]
        wide = table.pivot_table(index="encoder", columns="source", values="shown", sort=False, aggfunc="first").reset_index()
    else:
        wide = table
    if len(table):
        rnd = table.groupby("source", sort=False)["random"].first()
        wide = pd.concat([wide, pd.DataFrame([{"encoder": "random", **{k: f"{v:.3f}" for k, v in rnd.items()}}])], ignore_index=True)
        pairs = table.groupby("source", sort=False)["n_pairs"].first()
        wide = pd.concat([wide, pd.DataFrame([{"encoder": "pairs in map", **{k: str(int(v)) for k, v in pairs.items()}}])], ignore_index=True)
    best = table[table["source"] == "CORUM"].sort_values("recall", ascending=False)["encoder"].tolist() if len(table) else []
    best = [b for b in best if (encoders[b] / "bench" / "complex_heatmap.png").exists()]

    umaps = "".join(f"<figure>{_file_img(d / 'bench' / 'umap_batch.png', f'UMAP of {n}', 560)}<figcaption>{html.escape(n)}</figcaption></figure>"
                    for n, d in encoders.items() if (d / "bench" / "umap_batch.png").exists())
    heat = ""
    if best:
        heat = f"<p>Encoder with the highest CORUM recall: <b>{html.escape(best[0])}</b>.</p>{_file_img(encoders[best[0]] / 'bench' / 'complex_heatmap.png', 'complex heatmap', 700)}"
        others = "".join(f"<figure>{_file_img(encoders[b] / 'bench' / 'complex_heatmap.png', f'complex heatmap {b}', 500)}<figcaption>{html.escape(b)}</figcaption></figure>" for b in best[1:])
        heat += f"<details><summary>the other encoders</summary><div class=row>{others}</div></details>" if others else ""
    map_rows, cg_rows, truth_rows = [], [], []

    def ci(entry: dict, key: str) -> str:
        lo, hi = (entry.get(f"{key}_ci") or [None, None])
        return fmt(entry.get(key), lo, hi)

    for n, r in results.items():
        s = r.summary
        a = s.get("map_activity", {})
        mc = s.get("map_consistency", {})
        map_rows.append({"encoder": n, "activity: mean mAP": a.get("mean_map"), "activity: fraction retrieved [95% CI]": ci(a, "fraction_retrieved"),
                         "random fraction": a.get("random_fraction_retrieved"), "CORUM consistency: mean mAP": mc.get("mean_map"),
                         "CORUM consistency: fraction retrieved [95% CI]": ci(mc, "fraction_retrieved")})
        cg = s.get("compound_gene")
        if cg and "skipped" not in cg:
            cg_rows.append({"encoder": n, "compounds": cg.get("n"), "mean AUC [95% CI]": ci(cg, "mean_auc"), "random AUC": cg.get("random_auc"),
                            "mean average precision [95% CI]": ci(cg, "mean_average_precision"), "random average precision": cg.get("random_average_precision")})
        dr, tc = s.get("decoding_r2", {}), s.get("truth_cosine", {})
        if "mean_r2" in dr or "spearman" in tc:
            truth_rows.append({"encoder": n, "decoding R2 [95% CI]": ci(dr, "mean_r2"), "cosine correlation with the truth [95% CI]": ci(tc, "spearman"),
                               "genes": tc.get("n_genes"), "random": 0.0})
    recall_json = json.dumps(table.drop(columns="shown", errors="ignore").to_dict(orient="records")).replace("</", "<\\/")  # safe inside <script>
    stage_df = pd.DataFrame([{"stage": k, "seconds": v.get("seconds"), "finished": v.get("finished")} for k, v in stages.items()])
    extra = run_dir / "report_extra.html"  # sections a run adds (the real-data probe)
    head = f"""
<h1>morphoscale run: {html.escape(str(cfg.get('name', run_dir.name)))}</h1>
<p class=meta>morphoscale {__version__} &middot; {html.escape(str(run_dir.resolve()))}</p>
"""
    tail = f"""
<h2>Config and provenance</h2>
<pre>{html.escape(cfg_file.read_text())}</pre>
{_table(stage_df, 1) if len(stage_df) else ''}
"""
    extra_html = extra.read_text() if extra.exists() else ""
    if not map_rows:  # no maps (a real field): its own section, the data and the training
        body = head + extra_html + f"<h2>Data</h2>{data_section(store)}<h2>Training</h2>{training_section(encoders)}" + tail
    else:
        body = head + f"""
<h2>Every encoder side by side</h2>
{split_note(cfg.get('split') or {})}
<p>Every number with its 95% interval (delete-one-unit jackknife: genes for gene-gene metrics, perturbations for
decoding, compounds for compound-gene retrieval; Wilson intervals for fractions of perturbations or complexes); the last
column is what a random map scores.</p>
{_table(summary_table(encoders, results, seconds))}
{skipped_section(results)}
{bench_cost_section(results)}
{paired_section(run_dir)}
{budget_section(run_dir, encoders)}
<h2>Relationship recall</h2>
<p>Fraction of known gene pairs whose cosine similarity falls in the bottom 5% or top 5% of all gene pairs, by
efaar-benchmarking's rank rule (random: about 0.10), with 95% intervals.</p>
{_table(wide)}
{recall_figure(table)}
{('<h2>Against the simulated truth</h2><p>Decoding R2: ridge regression from aligned well embeddings to the 15 true morphology parameters of each well, '
  'cross-validated with folds grouped by plate (0 = predicting the mean). Cosine correlation: Spearman correlation between the '
  "map's gene-gene cosines and those of the genes' true phenotypes.</p>" + _table(pd.DataFrame(truth_rows))) if truth_rows else ''}
<script type="application/json" id="recall-table">{recall_json}</script>
<h2>Data</h2>
{data_section(store)}
<h2>Training</h2>
{training_section(encoders)}
<h2>Batch correction: wells before and after alignment ({html.escape(str(cfg.get('map', {}).get('align', '')))})</h2>
<div class=row>{umaps or '<p>No UMAP (needs raw and aligned well embeddings).</p>'}</div>
<h2>Best-recovered complexes (cosine similarity, clustered)</h2>
{heat or '<p>No complex with enough genes in the map.</p>'}
<h2>Replicate consistency and perturbation magnitude</h2>
{distributions_figure(encoders)}
<h2>mAP (copairs)</h2>
{_table(pd.DataFrame(map_rows))}
<h2>Compound-gene retrieval</h2>
{_table(pd.DataFrame(cg_rows)) if cg_rows else '<p>No compounds with annotated targets.</p>'}
{extra_html}
""" + tail
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>morphoscale report: {html.escape(str(cfg.get('name', '')))}</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}}
table.t{{border-collapse:collapse;font-size:13px;margin:.5em 0}} table.t td,table.t th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}}
table.t td:first-child,table.t th:first-child{{text-align:left}}
.row{{display:flex;flex-wrap:wrap;gap:12px}} figure{{margin:0}} figcaption{{font-size:12px;color:#555}}
img{{max-width:100%}} pre{{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto}} .meta{{color:#666}}
</style></head><body>
{body}
<script>
window.addEventListener("error", function (e) {{ document.body.setAttribute("data-errors", (e.message || "error")); }});
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
    out = run_dir / "report.html"
    tmp = out.with_name(f".report.html.tmp-{os.getpid()}")
    tmp.write_text(page)
    os.replace(tmp, out)
    return out
