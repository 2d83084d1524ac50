#!/usr/bin/env python3
"""Time the Python peers of gonomaly's detectors and print JSON shaped like
`gonomaly bench detectors --json`, so that compare.py can join the two.

Peers: scikit-learn's IsolationForest and PyOD's IForest, ECOD, HBOS and KNN on an ODDS
CSV; River's HalfSpaceTrees and GaussianScorer on a NAB series. The protocol is the one
documented in cmd/gonomaly/benchdetectors.go and must stay identical to it:

- rows are ranked by splitmix64(splitmix64(seed) + row); --subsample N keeps the first N
  of the ranking; the first floor(0.6 n + 0.5) ranked rows train, the rest test (each in
  file order); both are standardised with the train part's mean and standard deviation;
- a run is a fresh detector: fit(train), then score(test), on one thread; the best of
  --repeat runs is reported; ROC-AUC is of the test scores (higher = more anomalous);
- a stream is a NAB series min-max scaled to [-1, 1] over its whole length, scored then
  learned record by record; ROC-AUC is against the NAB windows, mapped to rows as
  gonomaly's loader does.
"""

import os

# One thread everywhere, set before numpy loads its BLAS: the Go side runs on GOMAXPROCS 1.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402

MASK = (1 << 64) - 1

PROTOCOL = ("splitmix64 ranking → optional subsample → 60/40 train/test, standardised on train; "
            "best of repeat fresh fit(train)+score(test) runs on one thread; stream: min-max to [-1,1], "
            "score then learn per record")


def log(msg):
    print("peers.py: " + msg, file=sys.stderr, flush=True)


# --- the shared protocol -------------------------------------------------------------

def splitmix64(x):
    """splitmix64 on numpy uint64 arrays (wrapping arithmetic), as in benchdetectors.go."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def peer_split(n, subsample, seed):
    with np.errstate(over="ignore"):
        base = splitmix64(np.array([seed], dtype=np.uint64))[0]
        keys = splitmix64(base + np.arange(n, dtype=np.uint64))
    order = np.argsort(keys, kind="stable")
    if 0 < subsample < n:
        order = order[:subsample]
    cut = int(math.floor(0.6 * len(order) + 0.5))
    return np.sort(order[:cut]), np.sort(order[cut:])


def standardize(train, test):
    """scikit-learn's StandardScaler fitted on train, which eval.Standardize mirrors."""
    from sklearn.preprocessing import StandardScaler
    sc = StandardScaler().fit(train)
    return sc.transform(train), sc.transform(test)


def load_odds(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        header = next(csv.reader([f.readline()]))
        if header[-1].strip() != "label":
            raise SystemExit(f"{path}: the last column must be \"label\", got {header[-1]!r}")
        data = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    name = os.path.basename(path)
    for suffix in (".gz", ".csv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name, np.ascontiguousarray(data[:, :-1]), data[:, -1].astype(int)


def roc_auc(scores, labels):
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels, scores))


# --- batch peers ---------------------------------------------------------------------

# Parameters peers.py can mirror, named as gonomaly names them, with gonomaly's registry
# defaults: the same --param list then means the same hyperparameters on both sides.
DEFAULTS = {
    "iforest": {"trees": 100, "max_samples": 256, "max_features": 1.0},
    "ecod": {},
    "hbos": {"n_bins": 10, "alpha": 0.1, "tol": 0.5},
    "knn": {"n_neighbors": 5, "method": 0, "standardize": 1},
    "hst": {"trees": 25, "height": 15, "window": 250, "limit": 4.0},
    "zscore": {"window": 64, "min_samples": 8},
    "windowed_gaussian": {"window": 64, "min_samples": 8},
}


def resolve(name, given):
    if name not in DEFAULTS:
        raise SystemExit(f"peers.py: no Python peer for {name!r} (known: {', '.join(DEFAULTS)})")
    p = dict(DEFAULTS[name])
    for k, v in given.items():
        if k not in p:
            raise SystemExit(f"peers.py: --param {name}.{k}: the peer has no such parameter (known: {', '.join(p) or 'none'})")
        p[k] = v
    if name == "knn" and p["standardize"] != 0:
        raise SystemExit("peers.py: PyOD's KNN does not standardise: pass --param knn.standardize=0 "
                         "so that gonomaly's knn does not either")
    return p


def batch_peers(name, given, seed):
    """The Python peers of one gonomaly batch detector: (impl, params, factory, score)."""
    p = resolve(name, given)
    if name == "iforest":
        from sklearn.ensemble import IsolationForest
        from pyod.models.iforest import IForest
        kw = {"n_estimators": int(p["trees"]), "max_samples": int(p["max_samples"]),
              "max_features": float(p["max_features"]), "n_jobs": 1}
        return [
            ("sklearn.IsolationForest", kw, lambda: IsolationForest(**kw, random_state=seed),
             lambda m, X: -m.score_samples(X)),
            ("pyod.IForest", kw, lambda: IForest(**kw, random_state=seed), lambda m, X: m.decision_function(X)),
        ]
    if name == "ecod":
        from pyod.models.ecod import ECOD
        return [("pyod.ECOD", {"n_jobs": 1}, lambda: ECOD(n_jobs=1), lambda m, X: m.decision_function(X))]
    if name == "hbos":
        from pyod.models.hbos import HBOS
        kw = {"n_bins": int(p["n_bins"]), "alpha": float(p["alpha"]), "tol": float(p["tol"])}
        return [("pyod.HBOS", kw, lambda: HBOS(**kw), lambda m, X: m.decision_function(X))]
    if name == "knn":
        from pyod.models.knn import KNN
        kw = {"n_neighbors": int(p["n_neighbors"]), "method": ["largest", "mean", "median"][int(p["method"])], "n_jobs": 1}
        return [("pyod.KNN", kw, lambda: KNN(**kw), lambda m, X: m.decision_function(X))]
    raise SystemExit(f"peers.py: --detectors: no Python peer for {name!r}")


def bench_batch(path, names, params, subsample, seed, repeat):
    name, X, y = load_odds(path)
    if subsample > len(X):
        raise SystemExit(f"peers.py: --subsample {subsample}: {name} has only {len(X)} rows")
    tr, te = peer_split(len(X), subsample, seed)
    train, test = standardize(X[tr], X[te])
    labels = y[te]
    log(f"{name} {X.shape[0]}×{X.shape[1]} → train {len(tr)}, test {len(te)} rows ({int(labels.sum())} outliers)")
    out = []
    for det in names:
        for impl, kw, make, score in batch_peers(det, params.get(det, {}), seed):
            best, runs, auc, cpu = None, [], None, math.inf
            for run in range(repeat):
                model = make()
                gc.collect()
                c0 = time.process_time()
                t0 = time.perf_counter()
                model.fit(train)
                t1 = time.perf_counter()
                s = np.asarray(score(model, test), dtype=np.float64)
                t2 = time.perf_counter()
                cpu = min(cpu, time.process_time() - c0)
                fit, sc = t1 - t0, t2 - t1
                runs.append(fit + sc)
                if best is None or fit + sc < best[0] + best[1]:
                    best = (fit, sc)
                if run == 0:
                    if np.isnan(s).any():
                        raise SystemExit(f"peers.py: {impl} on {name}: NaN scores")
                    auc = roc_auc(s, labels)
                log(f"{name} {impl} run {run + 1}/{repeat}: fit {fit:.3f} s, score {sc:.3f} s")
            out.append({
                "dataset": name, "subsample": subsample, "seed": seed, "detector": det, "impl": impl,
                "params": kw, "train_rows": len(tr), "test_rows": len(te), "cols": X.shape[1],
                "fit_seconds": best[0], "score_seconds": best[1], "total_seconds": best[0] + best[1],
                "runs_seconds": runs, "cpu_seconds": cpu, "roc_auc": auc,
            })
    return out


# --- streaming peers -----------------------------------------------------------------

def parse_nab_time(s):
    s = s.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(s, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def load_nab_series(path, labels_path):
    """A NAB series and its row labels; windows map to rows as eval.LoadNAB maps them: from
    the first row at or after the start (file order) through the run of rows up to the end."""
    cat = os.path.dirname(os.path.abspath(path))
    root = os.path.dirname(cat)
    key = os.path.basename(cat) + "/" + os.path.basename(path)
    labels_path = labels_path or os.path.join(root, "combined_windows.json")
    with open(labels_path) as f:
        windows = json.load(f).get(key)
    if windows is None:
        raise SystemExit(f"peers.py: {labels_path}: no windows for {key}")
    ts, vals = [], []
    with open(path, newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            ts.append(parse_nab_time(row[0]))
            vals.append(float(row[1]))
    n = len(ts)
    lab = np.zeros(n, dtype=int)
    for start, end in sorted((parse_nab_time(a), parse_nab_time(b)) for a, b in windows):
        lo = 0
        while lo < n and ts[lo] < start:
            lo += 1
        hi = lo
        while hi < n and ts[hi] <= end:
            hi += 1
        lab[lo:hi] = 1
    return key, np.array(vals), lab


def stream_peers(name, given, seed):
    from river import anomaly
    params = resolve(name, given)
    if name == "hst":
        lim = float(params["limit"])
        p = {"n_trees": int(params["trees"]), "height": int(params["height"]),
             "window_size": int(params["window"]), "limits": [-lim, lim]}

        def run(xs):
            m = anomaly.HalfSpaceTrees(n_trees=p["n_trees"], height=p["height"], window_size=p["window_size"],
                                       limits={"value": (-lim, lim)}, seed=seed)
            dicts = [{"value": v} for v in xs]  # River's input type, built outside the clock
            scores = [0.0] * len(xs)
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for i, x in enumerate(dicts):
                scores[i] = m.score_one(x)
                m.learn_one(x)
            return time.perf_counter() - t0, time.process_time() - c0, scores
        return "river.HalfSpaceTrees", p, run
    if name in ("zscore", "windowed_gaussian"):
        # River has no z-score detector as such; GaussianScorer over a rolling window is a
        # rolling mean/std z-score mapped through the normal CDF, 2|Φ(z) − 1/2|, which ranks
        # records as |z| does. It is the same estimator as gonomaly's windowed_gaussian, and the
        # non-robust counterpart of gonomaly's zscore (rolling median/MAD).
        p = {"window_size": int(params["window"]), "grace_period": int(params["min_samples"])}

        def run(xs):
            m = anomaly.GaussianScorer(window_size=p["window_size"], grace_period=p["grace_period"])
            ys = [float(v) for v in xs]
            scores = [0.0] * len(xs)
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for i, v in enumerate(ys):
                scores[i] = m.score_one(None, v)
                m.learn_one(None, v)
            return time.perf_counter() - t0, time.process_time() - c0, scores
        return "river.GaussianScorer", p, run
    raise SystemExit(f"peers.py: --stream-detectors: no Python peer for {name!r} (known: hst, zscore, windowed_gaussian)")


def bench_stream(path, labels_path, names, params, seed, repeat):
    key, vals, lab = load_nab_series(path, labels_path)
    lo, hi = vals.min(), vals.max()
    scaled = (2 * (vals - lo) / (hi - lo) - 1).tolist()
    log(f"stream {key}, {len(vals)} records, {int(lab.sum())} in windows")
    out = []
    for det in names:
        impl, p, run = stream_peers(det, params.get(det, {}), seed)
        best, runs, auc, cpu = math.inf, [], None, math.inf
        for r in range(repeat):
            sec, csec, scores = run(scaled)
            runs.append(sec)
            best = min(best, sec)
            cpu = min(cpu, csec)
            if r == 0:
                s = np.array(scores, dtype=np.float64)
                s[np.isnan(s)] = -np.inf
                s[np.isneginf(s)] = (s[np.isfinite(s)].min() - 1) if np.isfinite(s).any() else 0
                auc = roc_auc(s, lab)
            log(f"{key} {impl} run {r + 1}/{repeat}: {sec:.3f} s ({len(vals) / sec:.0f} updates/s)")
        out.append({
            "series": key, "detector": det, "impl": impl, "params": p, "records": len(vals),
            "seconds": best, "updates_per_sec": len(vals) / best, "runs_seconds": runs, "cpu_seconds": cpu, "roc_auc": auc,
        })
    return out


def parse_params(items):
    """detector.param=value overrides, as `gonomaly bench detectors --param` takes them."""
    out = {}
    for it in items:
        key, _, val = it.partition("=")
        det, _, name = key.partition(".")
        if not (det and name and val):
            raise SystemExit(f"peers.py: --param {it!r}: want detector.param=value")
        try:
            out.setdefault(det, {})[name] = float(val)
        except ValueError:
            raise SystemExit(f"peers.py: --param {it!r}: {val!r} is not a number")
    return out


def versions():
    names = ("numpy", "scikit-learn", "pyod", "river")
    vs = []
    for n in names:
        try:
            vs.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            vs.append(f"{n} missing")
    return f"python {platform.python_version()}, " + ", ".join(vs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="")
    ap.add_argument("--detectors", default="iforest,ecod,hbos,knn")
    ap.add_argument("--stream-series", default="")
    ap.add_argument("--labels", default="")
    ap.add_argument("--stream-detectors", default="hst,zscore,windowed_gaussian")
    ap.add_argument("--subsample", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--json", action="store_true", help="accepted for symmetry with gonomaly; output is always JSON")
    a = ap.parse_args()
    if not a.dataset and not a.stream_series:
        ap.error("needs --dataset PATH and/or --stream-series PATH")
    params = parse_params(a.param)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    rep = {"side": "python", "runtime": versions(), "threads": 1, "repeat": a.repeat, "protocol": PROTOCOL,
           "batch": [], "stream": []}
    names = [n.strip() for n in a.detectors.split(",") if n.strip()]
    snames = [n.strip() for n in a.stream_detectors.split(",") if n.strip()]
    timed = (names if a.dataset else []) + (snames if a.stream_series else [])
    for det in timed:
        resolve(det, params.get(det, {}))  # fail on a bad parameter before loading anything
    for det in params:
        if det not in timed:
            ap.error(f"--param: parameters given for {det}, which is not among the detectors timed ({', '.join(timed)})")
    if a.dataset and names:
        rep["batch"] = bench_batch(a.dataset, names, params, a.subsample, a.seed, a.repeat)
    if a.stream_series and snames:
        rep["stream"] = bench_stream(a.stream_series, a.labels, snames, params, a.seed, a.repeat)
    json.dump(rep, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
