#!/usr/bin/env python3
"""Join `gonomaly bench detectors --json` and peers.py outputs into a markdown table of
ratios, checked against issue 7's goals. Standard library only, so it runs with any
python3.

    compare.py --dir OUT [--meta OUT/meta.json] [--out OUT/peers.md] [--strict]

reads OUT/gonomaly-*.json and OUT/python-*.json, prints the markdown and writes it to
--out. --strict exits 1 when a goal is not met (run.sh's default is to report only).
"""

import argparse
import glob
import json
import os
import sys

# Goals of issue 7, part 2.
IFOREST_GOAL = 5.0   # × scikit-learn's IsolationForest, fit + score, one thread
HST_GOAL = 20.0      # × River's HalfSpaceTrees, updates/s
# "Equal" ROC-AUC allows this much below the peer: the two sides rank ties and round
# floating point differently, and a difference under 0.005 is below what one split shows.
AUC_TOLERANCE = 0.005

# The peer each goal is read against.
IFOREST_PEER = "sklearn.IsolationForest"
HST_PEER = "river.HalfSpaceTrees"


def load(pattern):
    docs = []
    for path in sorted(glob.glob(pattern)):
        with open(path) as f:
            docs.append(json.load(f))
    return docs


def ds_label(r):
    return f"{r['dataset']} (subsample {r['subsample']})" if r.get("subsample") else r["dataset"]


def fmt_s(v):
    return f"{v:.4f}" if v < 10 else f"{v:.2f}"


def fmt_x(v):
    return f"{v:.1f}×" if v < 100 else f"{v:.0f}×"


def fmt_rate(v):
    return f"{v:,.0f}"


def cpu_x(p, g):
    """The CPU-time ratio, or "–" when a side measured none (getrusage's resolution can
    round a run of a few microseconds to zero)."""
    pc, gc = p.get("cpu_seconds"), g.get("cpu_seconds")
    if not pc or not gc:
        return "–"
    return fmt_x(pc / gc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--meta", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--strict", action="store_true")
    a = ap.parse_args()

    go_docs = load(os.path.join(a.dir, "gonomaly-*.json"))
    py_docs = load(os.path.join(a.dir, "python-*.json"))
    if not go_docs or not py_docs:
        sys.exit(f"compare.py: need gonomaly-*.json and python-*.json in {a.dir}")
    meta = {}
    if a.meta and os.path.exists(a.meta):
        with open(a.meta) as f:
            meta = json.load(f)

    go_batch = {(r["dataset"], r["subsample"], r["detector"]): r for d in go_docs for r in d["batch"]}
    go_stream = {(r["series"], r["detector"]): r for d in go_docs for r in d["stream"]}
    py_batch = [r for d in py_docs for r in d["batch"]]
    py_stream = [r for d in py_docs for r in d["stream"]]

    lines = []
    add = lines.append
    add("# gonomaly vs Python peers")
    add("")
    if meta:
        add(f"- machine: {meta.get('machine', '?')}")
        add(f"- load average before / after: {meta.get('load_before', '?')} / {meta.get('load_after', '?')}")
        add(f"- gonomaly: {go_docs[0]['runtime']}, GOMAXPROCS 1 while measuring, workers 1, built without -race")
        add(f"- peers: {py_docs[0]['runtime']}; OMP/OpenBLAS/MKL/numba threads 1, n_jobs=1")
        add(f"- started {meta.get('started', '?')}, took {meta.get('seconds', '?')} s")
    add(f"- timing: best of {go_docs[0]['repeat']} fresh runs per detector on both sides; "
        "ratios are peer time ÷ gonomaly time (> 1: gonomaly is faster); **×** is wall time, "
        "which the goals are read on; × CPU is process CPU time, which other processes on a "
        "shared machine do not inflate")
    add(f"- protocol: {go_docs[0]['protocol']}")
    add("")

    failures = []
    goals = []

    add("## Batch detectors: fit + score, one thread")
    add("")
    add("| dataset | detector | train / test rows | gonomaly fit / score s | peer | peer fit / score s "
        "| × fit+score | × CPU | × score only | ROC-AUC gonomaly | ROC-AUC peer |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in py_batch:
        g = go_batch.get((p["dataset"], p["subsample"], p["detector"]))
        if g is None:
            add(f"| {ds_label(p)} | {p['detector']} | – | missing | {p['impl']} | – | – | – | – | – | {p['roc_auc']:.4f} |")
            failures.append(f"no gonomaly result for {p['detector']} on {ds_label(p)}")
            continue
        ratio = p["total_seconds"] / g["total_seconds"]
        score_ratio = p["score_seconds"] / g["score_seconds"] if g["score_seconds"] > 0 else float("inf")
        cpu_ratio = cpu_x(p, g)
        add(f"| {ds_label(p)} | {p['detector']} | {g['train_rows']} / {g['test_rows']} "
            f"| {fmt_s(g['fit_seconds'])} / {fmt_s(g['score_seconds'])} | {p['impl']} "
            f"| {fmt_s(p['fit_seconds'])} / {fmt_s(p['score_seconds'])} | **{fmt_x(ratio)}** | {cpu_ratio} | {fmt_x(score_ratio)} "
            f"| {g['roc_auc']:.4f} | {p['roc_auc']:.4f} |")
        if p["impl"] == IFOREST_PEER:
            ok = ratio >= IFOREST_GOAL
            goals.append((f"iforest ≥ {IFOREST_GOAL:g}× {IFOREST_PEER} on {ds_label(p)}", ok,
                          f"{fmt_x(ratio)} ({fmt_s(p['total_seconds'])} s vs {fmt_s(g['total_seconds'])} s); CPU time {cpu_ratio}"))
        ok = g["roc_auc"] >= p["roc_auc"] - AUC_TOLERANCE
        goals.append((f"ROC-AUC {p['detector']} on {ds_label(p)} ≥ {p['impl']}", ok,
                      f"{g['roc_auc']:.4f} vs {p['roc_auc']:.4f}"))
    add("")

    if py_stream:
        add("## Streaming detectors: score then learn, per record, one thread")
        add("")
        add("| series | detector | records | gonomaly updates/s | peer | peer updates/s | × | × CPU | ROC-AUC gonomaly | ROC-AUC peer |")
        add("|---|---|---|---|---|---|---|---|---|---|")
        for p in py_stream:
            g = go_stream.get((p["series"], p["detector"]))
            if g is None:
                failures.append(f"no gonomaly result for {p['detector']} on {p['series']}")
                continue
            ratio = g["updates_per_sec"] / p["updates_per_sec"]
            cpu_ratio = cpu_x(p, g)
            add(f"| {p['series']} | {p['detector']} | {g['records']} | {fmt_rate(g['updates_per_sec'])} | {p['impl']} "
                f"| {fmt_rate(p['updates_per_sec'])} | **{fmt_x(ratio)}** | {cpu_ratio} | {g['roc_auc']:.4f} | {p['roc_auc']:.4f} |")
            if p["impl"] == HST_PEER:
                goals.append((f"hst ≥ {HST_GOAL:g}× {HST_PEER} on {p['series']}", ratio >= HST_GOAL,
                              f"{fmt_x(ratio)} ({fmt_rate(g['updates_per_sec'])} vs {fmt_rate(p['updates_per_sec'])} updates/s); CPU time {cpu_ratio}"))
            ok = g["roc_auc"] >= p["roc_auc"] - AUC_TOLERANCE
            goals.append((f"ROC-AUC {p['detector']} on {p['series']} ≥ {p['impl']}", ok,
                          f"{g['roc_auc']:.4f} vs {p['roc_auc']:.4f}"))
        add("")

    add(f"## Goals (ROC-AUC \"equal\" allows {AUC_TOLERANCE} below the peer)")
    add("")
    add("| goal | met | measured |")
    add("|---|---|---|")
    for name, ok, measured in goals:
        add(f"| {name} | {'met' if ok else '**not met**'} | {measured} |")
    for f in failures:
        add(f"| {f} | **not met** | – |")
    unmet = sum(1 for _, ok, _ in goals if not ok) + len(failures)
    add("")
    add(f"{len(goals) + len(failures) - unmet} of {len(goals) + len(failures)} goals met.")
    if meta.get("commands"):
        add("")
        add("## Commands")
        add("")
        add("```")
        lines.extend(meta["commands"])
        add("```")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.strict and unmet:
        sys.exit(1)


if __name__ == "__main__":
    main()
