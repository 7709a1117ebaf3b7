#!/usr/bin/env python3
"""Benchmark: report.html at 20 000 crops in headless Chromium, the review workspace beside the previous page.

    PYTHONPATH=. .venv/bin/python bench/report_browser.py                # N = 20 000 crops, 3 repeats
    PYTHONPATH=. .venv/bin/python bench/report_browser.py --crops 2000 --repeats 3 --output /tmp/small.json

A synthetic run (N crops in individuals of one or two crops, clusters of 2..60 individuals plus singletons, d = 384
unit vectors around each cluster's centre; 200 distinct 128 px thumbnails shared by all items; no image originals,
so no file is hashed: the digests are given) is written twice: by this tree's outputs/report (the workspace: the
"more like this" and misplaced-score computation included in its write time) and by the report of the commit named
by --baseline (the previous page, as that tree writes it: its misplaced scores and suggestions when it has them).
Both pages are opened in the same headless Chromium, repeats interleaved, with fresh local storage each time;
measured per page:
  write_s         writing report.html from the table (Python; thumbnails and the 2-D map excluded: the same for both;
                  the misplaced scores and suggestions included where the tree computes them)
  html_mb         size of report.html
  first_paint_ms  first contentful paint after navigation (the browser's paint timing)
  ready_ms        navigation start to DOMContentLoaded's end: the page's script has built the first page and the
                  parser has finished (in Chromium this includes the first style and layout of the built cards)
  built_ms        navigation start to the end of the page's script (pages that record it: body[data-built-at])
  merge_ms        tick two clusters, merge them into a named group: from the click to the next painted frame
and for a workspace page: move_ms (10 selected crops to another cluster), undo_ms (Ctrl+Z of that move),
lasso_ms (a box over a quarter of the map selecting its crops), and with suggestions accept_ms (accepting the
first one). Medians of --repeats go to
bench/results/report_browser.json with the machine and versions.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.machine import machine, versions  # noqa: E402
from browser import Browser, find_chromium  # noqa: E402

WRITE = """
import importlib, json, sys, time
import numpy as np, pandas as pd
sys.path.insert(0, sys.argv[1])
package = "crop_cluster.outputs" if sys.argv[4] == "workspace" else "outputs"   # the previous tree's name
html = importlib.import_module(package + ".report.html")
report_document, write_html = html.report_document, html.write_html
folder = sys.argv[2]
table = pd.read_pickle(folder + "/table.pkl")
emb = np.load(folder + "/emb.npy")
coords = np.load(folder + "/coords.npy")
thumbs = json.load(open(folder + "/thumbs.json"))
digests = json.load(open(folder + "/digests.json"))
def optional(name, attribute):
    try:
        return getattr(importlib.import_module(package + ".report." + name), attribute)
    except ImportError:     # an older tree without that step
        return None
start = time.perf_counter()
info = {"title": "bench", "threshold": 0.9, "model": "synthetic", "map_method": "pca"}
review_order, suggest = optional("review_order", "review_order"), optional("suggestions", "suggest_for_report")
arguments = [table, thumbs, coords, info]
if review_order is not None:
    reps = np.flatnonzero(table["representative"].to_numpy(bool))
    order = review_order(emb[reps], table["cluster"].to_numpy(np.int64)[reps])
    arguments += [digests, order]
    if suggest is not None:
        arguments.append(suggest(table, emb, reps, order, 0.9, digests=digests))
document = report_document(*arguments)
write_html(sys.argv[3], document)
print(json.dumps({"write_s": time.perf_counter() - start}))
"""


def synthetic(folder: Path, n_crops: int, dim: int, seed: int) -> dict:
    """The run's table, embeddings, map and thumbnails in `folder` (see the module docstring); returns its counts."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    individuals, cluster, k = [], [], 0
    while sum(individuals) < n_crops:
        size = int(rng.integers(2, 61)) if rng.random() < 0.7 else 1
        for _ in range(size):
            individuals.append(1 if rng.random() < 0.8 else 2)
            cluster.append(k if size > 1 else -1)
        k += size > 1
    crops_per = np.array(individuals)
    rep_cluster = np.array(cluster)
    individual = np.repeat(np.arange(crops_per.size), crops_per)[:n_crops]
    row_cluster = rep_cluster[individual]
    centres = rng.normal(size=(k + 1, dim)).astype(np.float32)
    emb = centres[np.maximum(row_cluster, 0)] * (row_cluster >= 0)[:, None] + \
        0.6 * rng.normal(size=(n_crops, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    first = np.r_[True, individual[1:] != individual[:-1]]
    table = pd.DataFrame({"filename": [f"/data/night{i // 5000}/crop_{i:06d}.jpg" for i in range(n_crops)],
                          "cluster": row_cluster, "cluster_size": 0, "sim_to_centroid": rng.uniform(0.8, 1, n_crops),
                          "individual": individual, "representative": first,
                          "timestamp": "2024-06-01T22:00:00"})
    table.to_pickle(folder / "table.pkl")
    np.save(folder / "emb.npy", emb)
    reps = int(first.sum())
    np.save(folder / "coords.npy", rng.integers(0, 1001, size=(reps, 2)).astype(np.int32))
    (folder / "report").mkdir()
    for t in range(200):
        Image.new("RGB", (128, 96), tuple(int(v) for v in rng.integers(0, 255, 3))).save(
            folder / "report" / f"t{t}.jpg", quality=80)
    (folder / "thumbs.json").write_text(json.dumps([f"report/t{t % 200}.jpg" for t in range(reps)]))
    (folder / "digests.json").write_text(json.dumps([f"{i:032x}" for i in range(n_crops)]))
    return {"individuals": reps, "clusters": k}


def baseline_tree(commit: str, target: Path) -> Path:
    """The previous report's package (outputs/report and outputs/atomic.py at `commit`) under `target`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "outputs/__init__.py", "outputs/atomic.py",
                              "outputs/report"], check=True, capture_output=True).stdout
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def write_page(tree: Path, folder: Path, name: str, kind: str) -> float:
    done = subprocess.run([sys.executable, "-c", WRITE, str(tree), str(folder), str(folder / name), kind],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["write_s"]


FRAME = ("new Promise((done) => {{ const t = performance.now(); {action}; "
         "requestAnimationFrame(() => setTimeout(() => done(performance.now() - t), 0)); }})")
MERGE = ("(() => {{ const boxes = document.querySelectorAll('section[data-cluster] input.select'); "
         "boxes[0].click(); boxes[1].click(); document.getElementById({name!r}).value = 'merged'; "
         "return {frame}; }})()")


def open_page(browser: Browser, path: Path) -> dict:
    browser.call("Page.navigate", url="about:blank")
    browser.evaluate("(() => { try { localStorage.clear(); } catch (e) {} })()")
    start = time.perf_counter()
    browser.call("Page.navigate", url=path.as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === 'true'", timeout=120)
    wall_ms = (time.perf_counter() - start) * 1000
    # the page's script is inline at the end of <body>: DOMContentLoaded ends once it has built the first page
    ready_ms = browser.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    paint = None
    for _ in range(20):   # the paint timing entry may be recorded a few frames later
        browser.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)))")
        paint = browser.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || "
                                 "performance.getEntriesByName('first-paint')[0] || {}).startTime || null")
        if paint is not None:
            break
    built = browser.evaluate("Number(document.body.dataset.builtAt) || null")   # the page's script done (newer pages)
    return {"first_paint_ms": paint, "ready_ms": ready_ms, "wall_ms": wall_ms, "built_ms": built}


def measure(browser: Browser, path: Path, kind: str) -> dict:
    found = open_page(browser, path)
    workspace = browser.evaluate("!!document.getElementById('move')")      # the review workspace's page
    found["merge_ms"] = browser.evaluate(MERGE.format(
        name="name" if workspace else "merge-name",
        frame=FRAME.format(action="document.getElementById('merge').click()")))
    if workspace:
        found["move_ms"] = browser.evaluate(FRAME.format(action=(
            "document.querySelectorAll('section[data-cluster] figure').forEach((f, k) => k < 10 && f.click()); "
            "document.getElementById('target').value = document.querySelectorAll('section[data-cluster]')[1]"
            ".dataset.cluster; document.getElementById('move').click()")))
        found["undo_ms"] = browser.evaluate(FRAME.format(action="document.getElementById('undo').click()"))
        found["lasso_ms"] = lasso(browser)
    if browser.evaluate("!!document.getElementById('suggestion-accept')"):      # last: the others' sequence as before
        found["accept_ms"] = browser.evaluate(FRAME.format(
            action="document.getElementById('suggestion-accept').click()"))
    return found


def lasso(browser: Browser) -> float:
    """A box drag over the map's top-left quarter: from the press to the painted selection (ms)."""
    browser.evaluate("window.scrollTo(0, 0)")
    left, top = browser.evaluate("(() => { const r = document.getElementById('map-overlay').getBoundingClientRect(); "
                                 "return [r.left, r.top]; })()")
    start = time.perf_counter()
    for kind, x, y in (("mousePressed", 5, 5), ("mouseMoved", 80, 80), ("mouseReleased", 160, 160)):
        browser.call("Input.dispatchMouseEvent", type=kind, x=left + x, y=top + y, button="left", buttons=1,
                     clickCount=1)
    browser.evaluate("new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)))")
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="1ddfe79", help="commit of the previous report page")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "report_browser.json"))
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("bench/report_browser.py needs Chromium (bash install.sh --dev)")
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        folder = Path(tmp)
        counts = synthetic(folder, args.crops, args.dim, seed=0)
        old = baseline_tree(args.baseline, folder / "baseline-tree")
        pages = {"workspace": (REPO, "workspace.html"), "baseline": (old, "baseline.html")}
        runs = {kind: [] for kind in pages}
        browser = Browser(chromium, timeout=120)
        try:
            for _ in range(args.repeats):
                for kind, (tree, name) in pages.items():      # interleaved: machine noise hits both alike
                    write_s = write_page(tree, folder, name, kind)
                    found = measure(browser, folder / name, kind)
                    found.update(write_s=write_s, html_mb=(folder / name).stat().st_size / 2**20)
                    runs[kind].append(found)
        finally:
            browser.close()
    medians = {kind: {key: median([r[key] for r in found]) for key in found[0]} for kind, found in runs.items()}
    ratios = {key: round(medians["workspace"][key] / medians["baseline"][key], 2)
              for key in ("first_paint_ms", "ready_ms", "merge_ms", "move_ms", "undo_ms", "lasso_ms", "write_s",
                          "html_mb") if medians["baseline"].get(key) and medians["workspace"].get(key)}
    result = {"benchmark": "report_browser", "crops": args.crops, **counts, "dim": args.dim,
              "repeats": args.repeats, "baseline_commit": args.baseline, "machine": machine(),
              "versions": {**versions(["numpy", "pandas"]), "chromium": chromium_version(chromium)},
              "median": medians, "ratio_workspace_to_baseline": ratios, "runs": runs}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"median": medians, "ratio": ratios}, indent=2))


def median(values):
    """Median rounded to 0.01, None when a value is missing (e.g. no paint timing)."""
    return None if any(v is None for v in values) else round(statistics.median(values), 2)


def chromium_version(binary: str) -> str:
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    main()
