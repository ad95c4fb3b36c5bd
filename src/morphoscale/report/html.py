"""`morphoscale report RUN_DIR`: one self-contained HTML page of a run folder.

Every figure is a PNG embedded as a data URI, so the file can be mailed or opened offline.
Numbers come from the run's own tables (bench/*.csv, recall.csv, probe/, compare/): the
report draws, it does not recompute. Each section finds its own files in the run folder."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .. import __version__
from ..bench.summary import fmt, recall_table, run_results
from ..errors import InputError
from ..io import read_record, write_text
from .elements import file_img, html_table
from .grid import grid_section
from .probe import probe_section
from .sections import (
    bench_cost_section,
    budget_section,
    data_section,
    distributions_figure,
    ladder_section,
    paired_section,
    recall_figure,
    recall_wide,
    skipped_section,
    split_note,
    summary_table,
    training_section,
)

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table.t{border-collapse:collapse;font-size:13px;margin:.5em 0}
table.t td,table.t th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
table.t td:first-child,table.t th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0} figcaption{font-size:12px;color:#555}
img{max-width:100%} pre{background:#f6f6f6;padding:1em;font-size:12px;overflow:auto} .meta{color:#666}
"""

# the browser test reads these attributes: script errors and images that failed to decode
CHECKS = """
window.addEventListener("error", function (e) { document.body.setAttribute("data-errors", (e.message || "error")); });
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
});
"""


@dataclass
class RunFolder:
    """What the report reads of a run folder: its config, encoders, stage records and store."""

    path: Path
    cfg: dict
    encoders: dict[str, Path]
    stages: dict[str, dict]
    store: Path

    @classmethod
    def read(cls, run_dir: Path) -> "RunFolder":
        run_dir = Path(run_dir)
        cfg_file = run_dir / "run.yaml"
        if not cfg_file.exists():
            raise InputError(f"{run_dir}: not a run folder (no run.yaml; make one with `morphoscale run`)")
        cfg = yaml.safe_load(cfg_file.read_text())
        names = [e["name"] for e in cfg.get("encoders", [])]
        encoders = {n: run_dir / "encoders" / n for n in names if (run_dir / "encoders" / n).exists()}
        records = {f.stem.replace("--", ":"): read_record(f) for f in sorted((run_dir / "stages").glob("*.json"))}
        stages = {k: rec for k, rec in records.items() if rec}  # a torn record: its stage did not finish
        store = Path(cfg["data"]["store"]) if cfg["data"].get("store") else run_dir / "store.zarr"
        return cls(run_dir, cfg, encoders, stages, store)


def figures_section(encoders: dict[str, Path], table: pd.DataFrame) -> tuple[str, str]:
    """(UMAPs before and after alignment, complex heatmaps with the best CORUM encoder first)."""
    umaps = "".join(
        f"<figure>{file_img(d / 'bench' / 'umap_batch.png', f'UMAP of {n}', 560)}<figcaption>{html.escape(n)}</figcaption></figure>"
        for n, d in encoders.items()
        if (d / "bench" / "umap_batch.png").exists()
    )
    best = (
        table[table["source"] == "CORUM"].sort_values("recall", ascending=False)["encoder"].tolist()
        if len(table)
        else []
    )
    best = [b for b in best if (encoders[b] / "bench" / "complex_heatmap.png").exists()]
    if not best:
        return umaps, ""
    heat = f"<p>Encoder with the highest CORUM recall: <b>{html.escape(best[0])}</b>.</p>" + file_img(
        encoders[best[0]] / "bench" / "complex_heatmap.png", "complex heatmap", 700
    )
    others = "".join(
        f"<figure>{file_img(encoders[b] / 'bench' / 'complex_heatmap.png', f'complex heatmap {b}', 500)}"
        f"<figcaption>{html.escape(b)}</figcaption></figure>"
        for b in best[1:]
    )
    return umaps, heat + (
        f"<details><summary>the other encoders</summary><div class=row>{others}</div></details>" if others else ""
    )


def _ci(entry: dict, key: str) -> str:
    lo, hi = entry.get(f"{key}_ci") or [None, None]
    return fmt(entry.get(key), lo, hi)


def metric_rows(results: dict) -> tuple[list, list, list]:
    """(mAP rows, compound-gene rows, rows against the simulated truth), one per encoder."""
    map_rows, cg_rows, truth_rows = [], [], []
    for n, r in results.items():
        s = r.summary
        a, mc = s.get("map_activity", {}), s.get("map_consistency", {})
        map_rows.append(
            {
                "encoder": n,
                "activity: mean mAP": a.get("mean_map"),
                "activity: fraction retrieved [95% CI]": _ci(a, "fraction_retrieved"),
                "random fraction": a.get("random_fraction_retrieved"),
                "CORUM consistency: mean mAP": mc.get("mean_map"),
                "CORUM consistency: fraction retrieved [95% CI]": _ci(mc, "fraction_retrieved"),
            }
        )
        cg = s.get("compound_gene")
        if cg and "skipped" not in cg:
            cg_rows.append(
                {
                    "encoder": n,
                    "compounds": cg.get("n"),
                    "mean AUC [95% CI]": _ci(cg, "mean_auc"),
                    "random AUC": cg.get("random_auc"),
                    "mean average precision [95% CI]": _ci(cg, "mean_average_precision"),
                    "random average precision": cg.get("random_average_precision"),
                }
            )
        dr, tc = s.get("decoding_r2", {}), s.get("truth_cosine", {})
        if "mean_r2" in dr or "spearman" in tc:
            truth_rows.append(
                {
                    "encoder": n,
                    "decoding R2 [95% CI]": _ci(dr, "mean_r2"),
                    "cosine correlation with the truth [95% CI]": _ci(tc, "spearman"),
                    "genes": tc.get("n_genes"),
                    "random": 0.0,
                }
            )
    return map_rows, cg_rows, truth_rows


def maps_body(run: RunFolder, results: dict) -> str:
    """Every section of a run with maps: the encoders side by side, recall, truth, data, training, figures."""
    seconds = {k: v.get("seconds", 0.0) for k, v in run.stages.items()}
    table = recall_table(results)
    wide = recall_wide(table)
    umaps, heat = figures_section(run.encoders, table)
    map_rows, cg_rows, truth_rows = metric_rows(results)
    recall_json = json.dumps(table.to_dict(orient="records")).replace("</", "<\\/")  # safe inside <script>
    truth = (
        (
            "<h2>Against the simulated truth</h2><p>Decoding R2: ridge regression from aligned well embeddings to the "
            "15 true morphology parameters of each well, "
            "cross-validated with folds grouped by plate (0 = predicting the mean). Cosine correlation: Spearman correlation between the "
            "map's gene-gene cosines and those of the genes' true phenotypes.</p>"
            + html_table(pd.DataFrame(truth_rows))
        )
        if truth_rows
        else ""
    )
    return f"""
<h2>Every encoder side by side</h2>
{split_note(run.cfg.get("split") or {})}
<p>Every number with its 95% interval (delete-one-unit jackknife over units that share no biology: groups of genes
that cut few of a source's pairs for recall, clusters of genes sharing a phenotype for the cosine correlation and of
perturbations for decoding, perturbations for mAP, compounds for compound-gene retrieval; Wilson intervals for
fractions of perturbations or complexes); the last column is what a random map scores.</p>
{html_table(summary_table(run.encoders, results, seconds))}
{skipped_section(results)}
{bench_cost_section(results)}
{paired_section(run.path)}
{ladder_section(run.path)}
{budget_section(run.path, run.encoders)}
<h2>Relationship recall</h2>
<p>Fraction of known gene pairs whose cosine similarity falls in the bottom 5% or top 5% of all gene pairs, by
efaar-benchmarking's rank rule (random: about 0.10), with 95% intervals.</p>
{html_table(wide)}
{recall_figure(table)}
{truth}
<script type="application/json" id="recall-table">{recall_json}</script>
<h2>Data</h2>
{data_section(run.store)}
<h2>Training</h2>
{training_section(run.encoders)}
<h2>Batch correction: wells before and after alignment ({html.escape(str(run.cfg.get("map", {}).get("align", "")))})</h2>
<div class=row>{umaps or "<p>No UMAP (needs raw and aligned well embeddings).</p>"}</div>
<h2>Best-recovered complexes (cosine similarity, clustered)</h2>
{heat or "<p>No complex with enough genes in the map.</p>"}
<h2>Replicate consistency and perturbation magnitude</h2>
{distributions_figure(run.encoders)}
<h2>mAP (copairs)</h2>
{html_table(pd.DataFrame(map_rows))}
<h2>Compound-gene retrieval</h2>
{html_table(pd.DataFrame(cg_rows)) if cg_rows else "<p>No compounds with annotated targets.</p>"}
{grid_section(run.path)}
"""


def write_report(run_dir: Path) -> Path:
    run = RunFolder.read(run_dir)
    name = str(run.cfg.get("name", run.path.name))
    head = f"""
<h1>morphoscale run: {html.escape(name)}</h1>
<p class=meta>morphoscale {__version__} &middot; {html.escape(str(run.path.resolve()))}</p>
"""
    stage_df = pd.DataFrame(
        [{"stage": k, "seconds": v.get("seconds"), "finished": v.get("finished")} for k, v in run.stages.items()]
    )
    tail = f"""
<h2>Config and provenance</h2>
<pre>{html.escape((run.path / "run.yaml").read_text())}</pre>
{html_table(stage_df, 1) if len(stage_df) else ""}
"""
    probe = probe_section(run.path, int((run.cfg.get("probe") or {}).get("crop_size", 64)))
    results = run_results(run.path, list(run.encoders))
    if not results:  # no maps (a real field): its own section, the data and the training
        body = (
            head
            + probe
            + f"<h2>Data</h2>{data_section(run.store)}<h2>Training</h2>{training_section(run.encoders)}"
            + tail
        )
    else:
        body = head + maps_body(run, results) + probe + tail
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>morphoscale report: {html.escape(str(run.cfg.get("name", "")))}</title>
<style>{STYLE}</style></head><body>
{body}
<script>{CHECKS}</script>
</body></html>
"""
    out = run.path / "report.html"
    write_text(out, page)
    return out
