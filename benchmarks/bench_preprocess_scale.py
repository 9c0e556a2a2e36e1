"""Preprocessing 1, 2, 4 and 8 real-size NSD sessions of one subject: time linear, memory flat.

The data: nsd-sim's ``bench`` preset with 8 sessions of subject 1 at its real size (81x104x83
voxels, 750 trials per session, 15,724 nsdgeneral voxels; ``.hdf5`` betas with every chunk
allocated like NSD's, 1.09 GB per session). Each figure is a whole ``braindecode-pkg
preprocess`` process (imports included) under ``/usr/bin/time``: wall seconds and peak RSS, the
median of ``--repeat`` runs with the files in the page cache and the input SHA-256 remembered
(the hash cache is filled by a first run that is not counted).

Printed against the 1-session run of the same invocation (absolute times drift on shared
machines): seconds per session, and peak RSS. The preprocess stage streams one session at a
time into its output file, so time should grow linearly with the sessions (seconds per session
flat) and peak memory should not grow.

    python benchmarks/bench_preprocess_scale.py [--data DIR] [--repeat 3] [--counts 1,2,4,8]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocess import PY, measure  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("results/bench-sim-8"),
                    help="where the 8-session bench data lives (simulated there if absent; ~8.7 GB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--counts", default="1,2,4,8", help="numbers of sessions to preprocess")
    a = ap.parse_args(argv)
    counts = [int(c) for c in a.counts.split(",")]

    root = a.data / "nsd"
    if not (a.data / "sim_truth/manifest.json").is_file():
        print(f"simulating {max(counts)} real-size sessions into {a.data} ...", flush=True)
        subprocess.run([PY, "-m", "braindecode_pkg", "simulate", "--preset", "bench", "--set",
                        f"sessions={max(counts)}", "--set", 'formats="hdf5"', "--out", str(a.data)], check=True)

    from braindecode_pkg.data.layout import NSDPaths

    p = NSDPaths(root)
    files = [p.betas(1, s, "hdf5") for s in range(1, max(counts) + 1)]
    for f in files:
        with open(f, "rb") as fh:  # into the page cache: every run reads warm files
            while fh.read(1 << 24):
                pass
    print(f"{len(files)} sessions of {files[0].stat().st_size / 1e9:.2f} GB .hdf5; median of {a.repeat} "
          "whole-process runs, peak RSS", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    env = dict(os.environ, BRAINDECODE_HASH_CACHE=str(tmp / "hash-cache"))

    def prep(n):
        return [PY, "-m", "braindecode_pkg", "preprocess", "--nsd-root", str(root), "--subject", "1",
                "--sessions", f"1-{n}" if n > 1 else "1", "--format", "hdf5", "--quiet",
                "--out", str(tmp / f"prep{n}.h5")]

    measure("hash cache warm-up (not counted)", prep(max(counts)), 1, env)
    res = {n: measure(f"preprocess {n} session(s)", prep(n), a.repeat, env) for n in counts}
    subprocess.run(["rm", "-rf", str(tmp)])

    (t1, m1), base = res[counts[0]], counts[0]
    print(f"\n{'sessions':>8} {'wall':>8} {'s/session':>10} {'vs ' + str(base):>7} {'peak RSS':>9} {'vs ' + str(base):>7}")
    for n in counts:
        t, m = res[n]
        print(f"{n:>8} {t:7.2f}s {t / n:9.2f}s {(t / n) / (t1 / base):6.2f}x {m:7.0f}MB {m / m1:6.2f}x")
    n = counts[-1]
    # process start-up and imports are paid once, so s/session can only fall as sessions grow
    half = counts[-2] if len(counts) > 1 else base
    print(f"\ntime {n} / {base} sessions: {res[n][0] / t1:.2f}x for {n / base:.0f}x the data (linear: <= {n / base:.0f}x); "
          f"peak RSS {res[n][1] / m1:.2f}x, and {res[n][1] / res[half][1]:.2f}x from {half} to {n} sessions "
          "(flat: no growth with the sessions)")


if __name__ == "__main__":
    main()
