"""Ridge with a leave-one-image-out penalty: today's ``ridge_cv`` against himalaya, in one run.

The data: synthetic, at a ``--scale`` of the real shapes (1.0: 30,000 training trials x 15,724
voxels -> 1024 target columns; 10,000 images of 3 repeats each). Each image has a latent of rank
64; its trials are ``latent @ A + noise`` (float32), its targets ``latent @ B + noise``, the same
for its 3 repeats. Held-out rows (images the fit never saw) are predicted by every method. Each
method runs in its own process; the figures are the fit's wall seconds and its peak RSS (VmHWM,
reset just before the fit, so it includes the data the fit is handed), the chosen penalty, and
max |prediction - today's prediction| on the held-out rows (the issue's criterion: 1e-4). The
ratios are against today's ``ridge_cv`` measured in the same run. The grid is
``DEFAULT_ALPHAS`` (17 penalties, 1..1e8), one penalty shared by all columns, intercept fitted.

Methods:
  today          ``braindecode_pkg.brain.ridge.ridge_cv``: exact leave-one-image-out from one
                 eigendecomposition (float64)  [baseline]
  hima-logo      ``himalaya.ridge.RidgeCV`` with the folds of ``LeaveOneGroupOut`` (the same CV):
                 himalaya decomposes every fold anew (one thin SVD of the training rows per fold,
                 then a (features x training rows) matrix per penalty), so only the first
                 ``--logo-folds`` of the 10,000 folds are run: its total is PROJECTED from them
                 (setup + folds x mean fold + the final refit, all measured)
  hima-gkf5      ``himalaya.ridge.RidgeCV`` with ``GroupKFold(5)`` on the images: a cheaper,
                 different CV (5 SVDs + the refit's); its penalty can differ from today's
  hima-fixed     ``himalaya.ridge.Ridge`` at today's chosen penalty, no CV: numerics alone
                 (one SVD, the least any himalaya ridge fit does)
  hima-kernel5   ``himalaya.kernel_ridge.KernelRidgeCV`` (linear kernel, ``GroupKFold(5)``): one
                 eigendecomposition of the (training rows)^2 kernel per fold
himalaya's splitters get the folds as a list of (train, test): it calls ``cv.split(X)`` without
groups, so ``LeaveOneGroupOut()`` or ``GroupKFold()`` passed as such raise. It runs on the
``--backend`` (``torch``: the same BLAS/LAPACK as today's code; ``torch_cuda`` where a GPU is) in
``--dtype`` (float32, its usual; float64 for numerics like today's).

Why today's code stays (2026-12-04; 2 cores shared with other jobs, load average 4-12, so the
seconds are wall time on a busy machine; himalaya 0.4.11, torch backend, float32):

  scale 0.5 (15,000 x 7,862 -> 512)  fit s            peak RSS   alpha    max|dpred|
  today                               736 (477 CPU s)  6.1 GB     1e5      -
  scale 0.25 (7,500 x 3,931 -> 256)
  today                               220              2.1 GB     3.16e4   -
  hima-logo                           8.0 days *       3.1 GB     -        -
  hima-gkf5                           992  (4.5x)      3.2 GB     3.16e4   6.6e-6
  scale 0.1 (3,000 x 1,572 -> 102)
  today                               4.9              0.88 GB    1e4      -
  hima-logo                           4.2 h * (3058x)  1.5 GB     -        -
  hima-gkf5                           95   (19x)       1.4 GB     1e4      4.0e-6
  hima-fixed                          11   (2.3x)      0.87 GB    1e4      5.2e-6
  hima-kernel5                        30   (6.1x)      1.0 GB     1e4      5.1e-6
  * projected from 2 (3) measured folds of 278 s (15 s) each, plus the measured refit

himalaya has no leave-one-out shortcut: exact leave-one-image-out costs it one SVD per image
(3,000 times today's fit), and even its 5-fold CV (6 SVDs) is 4.5-19 times slower than today's
exact CV from one eigendecomposition. Its single fit at a fixed penalty (hima-fixed) takes 0.8-2.3
times today's whole CV (two runs at 0.1), and its numerics agree well inside 1e-4 when the
penalties agree. So it is not wrong, only slower, and a GPU speeds the same algebra on both sides.
The real shapes (scale 1) were not run here: today's code projects to about 22 GB peak there
(0.78 + 21.2 x scale^2 GB from the 0.25 and 0.5 peaks) and 1-2 h, and the shared 24 GB machine
had 13-20 GB free. himalaya's 5-fold CV projects past 30 GB.

    python benchmarks/bench_ridge.py [--scale 1.0] [--methods today,hima-logo,...] [--logo-folds 2]

Needs himalaya for the hima-* methods (``pip install -c constraints.txt -e '.[bench]'``); without
it they are reported as skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = (30_000, 15_724, 1024)  # training trials, voxels, target columns
REPEATS = 3
RANK = 64
METHODS = ("today", "hima-logo", "hima-gkf5", "hima-fixed", "hima-kernel5")
HIMALAYA = "pip install -c constraints.txt -e '.[bench]'  (or: pip install himalaya)"


def shapes(scale: float) -> tuple[int, int, int, int]:
    """(images, voxels, columns, held-out images) at ``scale`` of the real shapes."""
    images = max(8, round(REAL[0] / REPEATS * scale))
    return images, max(8, round(REAL[1] * scale)), max(2, round(REAL[2] * scale)), max(4, images // 30)


def make_data(scale: float, seed: int = 0) -> dict:
    """Training X (n, p) float32, Y (n, d) float32, groups (n,) (image of each trial), and the
    held-out X_test: a rank-64 signal per image plus noise, Y equal over an image's repeats."""
    images, p, d, n_test_img = shapes(scale)
    rng = np.random.default_rng(seed)
    r = min(RANK, p // 2)
    lat = rng.standard_normal((images + n_test_img, r), dtype=np.float32)
    A = rng.standard_normal((r, p), dtype=np.float32) / np.float32(np.sqrt(r))
    B = rng.standard_normal((r, d), dtype=np.float32) / np.float32(np.sqrt(r))
    img = np.repeat(np.arange(images + n_test_img), REPEATS)
    X = rng.standard_normal((len(img), p), dtype=np.float32)
    X *= np.float32(2.0)  # voxel noise: SNR about 1/4 per voxel
    for a in range(0, len(img), 4096):  # the signal, in blocks (no second X-sized temporary)
        X[a:a + 4096] += lat[img[a:a + 4096]] @ A
    Yimg = lat @ B + np.float32(0.5) * rng.standard_normal((len(lat), d), dtype=np.float32)
    n = images * REPEATS
    return {"X": X[:n], "Y": Yimg[img[:n]], "groups": img[:n], "X_test": X[n:].copy()}


def _status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmHWM", "VmRSS", "VmSize"):
            out[k] = int(v.split()[0]) / 1024  # MiB
    return out


def _cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _TimedFolds:
    """A fixed list of (train, test) folds that stamps the time at each fold himalaya asks for
    (it iterates ``split`` several times; the last pass is its CV loop)."""

    def __init__(self, folds):
        self.folds, self.passes = list(folds), []

    def get_n_splits(self, *_, **__):
        return len(self.folds)

    def split(self, *_, **__):
        stamps = []
        self.passes.append(stamps)
        for f in self.folds:
            stamps.append(time.perf_counter())
            yield f
        stamps.append(time.perf_counter())


def _group_kfold(groups, k):
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(k).split(np.zeros(len(groups)), groups=groups))


def measure(method: str, scale: float, *, backend: str = "torch", dtype: str = "float32",
            logo_folds: int = 2, alpha: float | None = None, seed: int = 0, data: dict | None = None) -> dict:
    """Fit one method on the synthetic data in this process; returns its figures and ``pred``
    (held-out predictions, float64). ``alpha``: the penalty for ``hima-fixed``."""
    import torch  # noqa: F401  (imported before the clock starts, as himalaya's torch backend is)

    from braindecode_pkg.brain.ridge import DEFAULT_ALPHAS, ridge_cv

    d = make_data(scale, seed) if data is None else dict(data)
    groups, X_test, Y = d["groups"], d["X_test"], d["Y"]
    n, p = d["X"].shape
    out = {"method": method, "scale": scale, "shape": [n, p, Y.shape[1]], "images": int(len(np.unique(groups)))}
    alphas = np.asarray(DEFAULT_ALPHAS)
    if method == "today":
        reset = _reset_peak()
        before = _status()
        t0, c0 = time.perf_counter(), _cpu_s()
        r = ridge_cv(d.pop("X"), Y, groups=groups, alphas=alphas)  # X handed over: ridge_cv's float64 copy replaces it
        out["fit_s"], out["cpu_s"] = time.perf_counter() - t0, _cpu_s() - c0
        out["alpha"], out["cv"] = float(r["alpha"]), "leave-one-image-out (exact)"
        pred = X_test.astype(np.float64) @ r["coef"].astype(np.float64) + r["intercept"]
    else:
        try:
            import himalaya
            from himalaya.backend import set_backend
        except ImportError:
            return {**out, "skipped": f"himalaya not installed: {HIMALAYA}"}
        be = set_backend(backend)
        out["himalaya"] = himalaya.__version__
        X = d.pop("X").astype(dtype, copy=False)
        Y = Y.astype(dtype, copy=False)
        n_train = n * 4 // 5 if method != "hima-logo" else n - REPEATS
        # the (penalties, features, training rows) matrices of the primal solver, at most ~1 GB at once
        batch = max(1, min(len(alphas), int(1e9 // (X.itemsize * p * n_train))))
        params = {"local_alpha": False, "n_alphas_batch": batch}
        reset = _reset_peak()
        before = _status()
        t0, c0 = time.perf_counter(), _cpu_s()
        if method == "hima-fixed":
            from himalaya.ridge import Ridge

            if alpha is None:
                raise ValueError("hima-fixed needs today's alpha")
            model = Ridge(alpha=float(alpha), fit_intercept=True).fit(X, Y)
            out["alpha"], out["cv"] = float(alpha), "none (today's penalty)"
            timer = None
        else:
            if method == "hima-logo":
                from sklearn.model_selection import LeaveOneGroupOut

                folds = itertools.islice(LeaveOneGroupOut().split(np.zeros(n), groups=groups), logo_folds)
                out["cv"] = f"leave-one-image-out, first {logo_folds} of {out['images']} folds"
            else:
                folds = _group_kfold(groups, 5)
                out["cv"] = "GroupKFold(5)"
            timer = _TimedFolds(folds)
            if method == "hima-kernel5":
                from himalaya.kernel_ridge import KernelRidgeCV

                model = KernelRidgeCV(alphas=alphas, kernel="linear", fit_intercept=True, cv=timer,
                                      solver_params={"local_alpha": False, "n_alphas_batch": 1})
            else:
                from himalaya.ridge import RidgeCV

                model = RidgeCV(alphas=alphas, fit_intercept=True, cv=timer, solver_params=params)
            model.fit(X, Y)
            out["alpha"] = float(be.to_numpy(model.best_alphas_).ravel()[0])
        out["fit_s"], out["cpu_s"] = time.perf_counter() - t0, _cpu_s() - c0
        if timer is not None:
            st = timer.passes[-1]
            folds_s = np.diff(st)
            out["fold_s"] = [float(x) for x in folds_s]
            out["setup_s"] = float(st[0] - t0)
            out["refit_s"] = float(t0 + out["fit_s"] - st[-1])
            if method == "hima-logo":  # projected: setup + every fold at the measured mean + refit
                out["projected_s"] = out["setup_s"] + out["images"] * float(folds_s.mean()) + out["refit_s"]
                out["alpha"] = None  # a CV over a few folds chooses nothing meaningful
        pred = be.to_numpy(model.predict(X_test.astype(dtype))).astype(np.float64)
    after = _status()
    out["rss_before_mib"] = before["VmRSS"]
    out["peak_rss_mib"] = after["VmHWM"]
    out["peak_reset"] = reset
    out["pred"] = pred
    return out


def _limit_memory(margin_gib: float = 1.5) -> float:
    """Cap this process's address space at what the machine has free now (less a margin), so that
    a method too big for it fails with MemoryError rather than calling the kernel's OOM killer
    on the other processes here. Returns the cap's headroom in GiB."""
    avail = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                 if line.startswith("MemAvailable:")) * 1024
    head = max(avail - margin_gib * 2 ** 30, 2 ** 30)
    cap = int(_status()["VmSize"] * 2 ** 20 + head)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return head / 2 ** 30


def _worker(argv) -> int:
    method, scale, backend, dtype, logo_folds, alpha, out = argv
    head = _limit_memory()
    try:
        r = measure(method, float(scale), backend=backend, dtype=dtype, logo_folds=int(logo_folds),
                    alpha=None if alpha == "-" else float(alpha))
    except MemoryError:
        r = {"method": method, "skipped": f"out of memory ({head:.1f} GiB free at its start)"}
    pred = r.pop("pred", None)
    if pred is not None:
        np.save(out, pred)
    print(json.dumps(r))
    return 0


def _run(method, a, alpha, tmp: Path) -> tuple[dict, np.ndarray | None]:
    out = tmp / f"{method}.npy"
    cmd = [sys.executable, __file__, "--worker", method, str(a.scale), a.backend, a.dtype, str(a.logo_folds),
           "-" if alpha is None else repr(alpha), str(out)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"method": method, "skipped": f"worker failed (rc {p.returncode}): {tail}"}, None
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["process_s"] = time.perf_counter() - t0
    r["peak_rss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # cumulative max
    return r, (np.load(out) if out.exists() else None)


def _human(s: float) -> str:
    return f"{s / 86400:.1f} days" if s >= 86400 else f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real shapes (30,000 x 15,724 -> 1024)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--logo-folds", type=int, default=2, help="folds of hima-logo actually run (the rest projected)")
    ap.add_argument("--backend", default="torch", help="himalaya backend: torch, numpy, torch_cuda")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="himalaya's dtype")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return _worker(a.worker)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = set(methods) - set(METHODS)
    if bad:
        ap.error(f"unknown methods {sorted(bad)}")
    if "today" not in methods:
        methods.insert(0, "today")  # the baseline, and hima-fixed's penalty
    images, p, d, n_test = shapes(a.scale)
    print(f"scale {a.scale:g}: X {images * REPEATS} x {p} float32 ({images} images x {REPEATS} repeats) -> "
          f"Y {d} columns; {n_test * REPEATS} held-out rows; 17 penalties; himalaya on {a.backend} in {a.dtype}; "
          f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}); one process per method", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ridge-"))
    res, preds = {}, {}
    for m in ["today"] + [m for m in methods if m != "today"]:
        alpha = res["today"].get("alpha") if m == "hima-fixed" else None
        if m == "hima-fixed" and alpha is None:
            res[m] = {"method": m, "skipped": "today's fit gave no penalty"}
            continue
        res[m], preds[m] = _run(m, a, alpha, tmp)
        r = res[m]
        print(f"  {m}: " + (r["skipped"] if "skipped" in r else f"{r['fit_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB"),
              flush=True)
    base, bp = res["today"], preds.get("today")
    print(f"\n{'method':13s} {'CV':44s} {'fit s':>10s} {'x today':>8s} {'CPU s':>8s} {'peak RSS':>10s} "
          f"{'x today':>8s} {'alpha':>8s} {'max|dpred|':>11s}")
    for m, r in res.items():
        if "skipped" in r:
            print(f"{m:13s} skipped: {r['skipped']}")
            continue
        secs = r.get("projected_s", r["fit_s"])
        tag = "*" if "projected_s" in r else " "
        diff = float(np.abs(preds[m] - bp).max()) if bp is not None and preds.get(m) is not None and m != "hima-logo" else None
        r["max_abs_pred_diff"] = diff
        ratio_t = secs / base["fit_s"] if "fit_s" in base else float("nan")
        ratio_m = r["peak_rss_mib"] / base["peak_rss_mib"] if "peak_rss_mib" in base else float("nan")
        cpu = "-" if tag == "*" or "cpu_s" not in r else f"{r['cpu_s']:.1f}"
        print(f"{m:13s} {r['cv'][:44]:44s} {secs:9.1f}{tag} {ratio_t:7.2f}x {cpu:>8s} {r['peak_rss_mib']:6.0f} MiB {ratio_m:7.2f}x "
              f"{'-' if r.get('alpha') is None else format(r['alpha'], '.3g'):>8s} "
              f"{'-' if diff is None else format(diff, '.2e'):>11s}")
    for m, r in res.items():
        if "fold_s" in r:
            f = np.asarray(r["fold_s"])
            line = (f"  {m}: setup {r['setup_s']:.1f} s, {len(f)} folds of {f.mean():.1f} s each "
                    f"(min {f.min():.1f}, max {f.max():.1f}), refit {r['refit_s']:.1f} s")
            if "projected_s" in r:
                line += (f"; * PROJECTED from {len(f)} of {r['images']} folds: {r['projected_s']:.0f} s "
                         f"= {_human(r['projected_s'])} (measured {r['fit_s']:.1f} s)")
            print(line)
    if bp is not None:
        print(f"  max |today's held-out prediction| = {np.abs(bp).max():.3g}; criterion: max|dpred| <= 1e-4")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f} (fit seconds are wall time; CPU s: user + system)")
    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
