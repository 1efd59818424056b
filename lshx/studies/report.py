"""lshx report: figures (PNG) and an index.html for one search of a run DB."""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Dict, Optional

from lshx.errors import LshxError
from lshx.paths import writable_dir
from lshx.search.rundb import RunDB
from lshx.search.space import describe


def _load(db: RunDB, name: Optional[str]) -> dict:
    names = db.search_names()
    if not names:
        raise LshxError(f"no search in {db.path}")
    if name is None:
        name = names[-1]
    if name not in names:
        raise LshxError(f"no search named {name!r} in {db.path} (there are: {', '.join(names)})")
    s = db.get_search(name)
    cands = db.candidates(name)
    seed = s["args"]["seed"]
    ev = {c["cid"]: db.evals(c["eval_key"], seed) for c in cands}
    return {"name": name, "search": s, "cands": {c["cid"]: c for c in cands}, "evals": ev,
            "rounds": db.rounds(name)}


def label(c: dict) -> str:
    """A candidate as the report names it: dense, or #cid and its configuration."""
    return "dense" if c["origin"] == "dense" else f"#{c['cid']} {describe(c['config'])}"


def best_val(evals: Dict[int, dict]) -> float:
    """The best finite validation perplexity of one candidate's evaluations (+inf: none)."""
    v = [e["val_ppl"] for e in evals.values() if e["val_ppl"] is not None and math.isfinite(e["val_ppl"])]
    return min(v) if v else math.inf


def make_report(db_path: str | Path, out_dir: str | Path, name: Optional[str] = None) -> dict:
    from lshx.studies.figures import report_figures

    writable_dir(out_dir, "the report folder")  # before anything is read or drawn
    db = RunDB(db_path, readonly=True)  # a reader: the DB stays as it is
    try:
        d = _load(db, name)
    finally:
        db.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cands, evals = d["cands"], d["evals"]
    result = d["search"]["result"] or {}
    d["labels"] = {c: label(cands[c]) for c in cands}
    d["best_val"] = {c: best_val(evals[c]) for c in cands}

    figures, rho = report_figures(d, out)
    # summary table
    lines = [f"# Search `{d['name']}`", "", f"Options: `{json.dumps(d['search']['args'], sort_keys=True)}`", "",
             "| candidate | config | origin | status | last epoch | best val ppl (PTB-16%) |",
             "|---|---|---|---|---|---|"]
    for c in sorted(cands, key=lambda c: (best_val(evals[c]), c)):
        cc = cands[c]
        lines.append(f"| {c} | {label(cc)} | {cc['origin']} | {cc['status']} | {max(evals[c], default=0)} | "
                     f"{best_val(evals[c]):.2f} |")
    if result:
        lines += ["", f"Picked: {result['best']['describe']}, val ppl {result['best']['val_ppl']:.2f}, "
                      f"test ppl {result['best']['test_ppl']:.2f}; dense: val {result['dense']['val_ppl']:.2f}, "
                      f"test {result['dense']['test_ppl']:.2f}; {result['train_epochs']} training epochs."]
    if rho is not None:
        lines += ["", f"Spearman ρ(first-elimination distance, best val ppl) = {rho:.3f}"]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = "".join(f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>\n' for f in figures)
    table = "<pre>" + html.escape("\n".join(lines)) + "</pre>"
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>lshx report: {html.escape(d['name'])}</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}img{{max-width:100%}}</style></head>"
        f"<body><h1>lshx report: {html.escape(d['name'])}</h1>{body}{table}</body></html>\n", encoding="utf-8")
    return {"name": d["name"], "figures": figures, "out": str(out), "spearman": rho}
