"""Preprocessing one real-size NSD session: this project against named baselines, in one run.

The data: nsd-sim's ``bench`` preset, one session at subject 1's real size (81x104x83 voxels,
750 trials, 15,724 nsdgeneral voxels) in both NSD formats. Every figure is a whole process
(start-up and imports included) run under ``/usr/bin/time``: wall seconds and peak RSS, the
median of ``--repeat`` runs with the files in the page cache. Printed ratios are against
baselines measured in the same run, since absolute times drift on shared machines.

    python benchmarks/bench_preprocess.py [--data DIR] [--repeat 3]

Baselines:
  bare-roi-chunks   h5py reads exactly the ROI voxels' chunks (read_direct_chunk), ROI mask
                    from nibabel; nothing else — the least any HDF5 reader must do
  gunzip-zlib       decompress the whole .nii.gz with Python's gzip (zlib), discard it
  gunzip-isal       the same with ISA-L (python-isal), the fastest inflate available here
  nilearn-masker    nilearn NiftiMasker(mask_img=ROI, standardize) .fit_transform on the .nii.gz
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PY = sys.executable

BARE_ROI_CHUNKS = textwrap.dedent(
    """
    import sys, h5py, nibabel as nib, numpy as np
    roi = np.asarray(nib.load(sys.argv[2]).dataobj)
    ijk = np.argwhere(roi == 1)
    with h5py.File(sys.argv[1], "r") as f:
        read = f["betas"].id.read_direct_chunk
        buf = b"".join([read((0, k, j, i))[1] for i, j, k in ijk.tolist()])
    x = np.frombuffer(buf, np.int16).reshape(len(ijk), -1)
    print(x.shape, file=sys.stderr)
    """
)
GUNZIP = textwrap.dedent(
    """
    import sys
    if sys.argv[2] == "isal":
        from isal import igzip as gz
    else:
        import gzip as gz
    n = 0
    with gz.open(sys.argv[1], "rb") as f:
        while b := f.read(1 << 22):
            n += len(b)
    print(n, file=sys.stderr)
    """
)
NILEARN = textwrap.dedent(
    """
    import sys
    import nibabel as nib
    from nilearn.image import math_img
    from nilearn.maskers import NiftiMasker
    mask = math_img("img == 1", img=sys.argv[2])
    x = NiftiMasker(mask_img=mask, standardize="zscore_sample").fit_transform(sys.argv[1])
    print(x.shape, file=sys.stderr)
    """
)


def timed(cmd: list[str], env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one whole process."""
    with tempfile.NamedTemporaryFile("r") as tf:
        r = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", tf.name, *cmd],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
        wall, rss_kb = tf.read().split()[-2:]
    return float(wall), float(rss_kb) / 1024


def measure(name, cmd, repeat, env=None, setup=None):
    walls, rsss = [], []
    for _ in range(repeat):
        if setup:
            setup()
        w, r = timed(cmd, env)
        walls.append(w)
        rsss.append(r)
    res = (statistics.median(walls), max(rsss))
    print(f"  {name:<34s} {res[0]:7.2f} s  {res[1]:8.0f} MB   (runs: {', '.join(f'{w:.2f}' for w in walls)})",
          flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("results/bench-sim"),
                    help="where the bench preset lives (simulated there if absent)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-nilearn", action="store_true", help="skip the slow NiftiMasker baseline")
    a = ap.parse_args(argv)

    from braindecode_pkg.data.layout import NSDPaths

    root = a.data / "nsd"
    if not (a.data / "sim_truth/manifest.json").is_file():
        print(f"simulating the bench preset into {a.data} ...", flush=True)
        subprocess.run([PY, "-m", "braindecode_pkg", "simulate", "--preset", "bench", "--out", str(a.data)],
                       check=True)
    p = NSDPaths(root)
    h5, gz, roi = p.betas(1, 1, "hdf5"), p.betas(1, 1, "nifti"), p.roi(1, "nsdgeneral")
    for f in (h5, gz, roi):
        with open(f, "rb") as fh:  # into the page cache: every contender reads warm files
            while fh.read(1 << 24):
                pass
    print(f"session: {h5.stat().st_size / 1e6:.0f} MB .hdf5, {gz.stat().st_size / 1e6:.0f} MB .nii.gz; "
          f"median of {a.repeat} whole-process runs, peak RSS", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    cache = tmp / "hash-cache"

    def clear_cache():
        subprocess.run(["rm", "-rf", str(cache)], check=True)

    env = dict(os.environ, BRAINDECODE_HASH_CACHE=str(cache))
    prep = [PY, "-m", "braindecode_pkg", "preprocess", "--nsd-root", str(root), "--subject", "1",
            "--sessions", "1", "--quiet"]
    r = {}
    r["bare"] = measure("bare-roi-chunks (hdf5)", [PY, "-c", BARE_ROI_CHUNKS, str(h5), str(roi)], a.repeat)
    r["h5_cold"] = measure("preprocess hdf5, sha256 computed", prep + ["--format", "hdf5", "--out", str(tmp / "a.h5")],
                           a.repeat, env, setup=clear_cache)
    r["h5"] = measure("preprocess hdf5, sha256 remembered", prep + ["--format", "hdf5", "--out", str(tmp / "a.h5")],
                      a.repeat, env)
    r["zlib"] = measure("gunzip-zlib (.nii.gz)", [PY, "-c", GUNZIP, str(gz), "zlib"], a.repeat)
    r["isal"] = measure("gunzip-isal (.nii.gz)", [PY, "-c", GUNZIP, str(gz), "isal"], a.repeat)
    r["gz_cold"] = measure("preprocess nifti, sha256 computed", prep + ["--format", "nifti", "--out", str(tmp / "b.h5")],
                           a.repeat, env, setup=clear_cache)
    r["gz"] = measure("preprocess nifti, sha256 remembered", prep + ["--format", "nifti", "--out", str(tmp / "b.h5")],
                      a.repeat, env)
    if not a.skip_nilearn:
        r["nilearn"] = measure("nilearn-masker (.nii.gz)", [PY, "-c", NILEARN, str(gz), str(roi)], 1)

    print("\nratios (lower is better for the first number)")
    print(f"  preprocess hdf5 / bare-roi-chunks        {r['h5'][0] / r['bare'][0]:5.2f}x  (sha256 computed: "
          f"{r['h5_cold'][0] / r['bare'][0]:.2f}x)   target <= 1.5x")
    print(f"  preprocess nifti / gunzip-isal           {r['gz'][0] / r['isal'][0]:5.2f}x  (sha256 computed: "
          f"{r['gz_cold'][0] / r['isal'][0]:.2f}x)   target <= 1.5x")
    print(f"  preprocess nifti / gunzip-zlib           {r['gz'][0] / r['zlib'][0]:5.2f}x")
    print(f"  preprocess nifti peak RSS                {r['gz'][1]:5.0f} MB   target < 400 MB")
    if "nilearn" in r:
        print(f"  nilearn-masker / preprocess hdf5         {r['nilearn'][0] / r['h5'][0]:5.1f}x faster  "
              f"(sha256 computed: {r['nilearn'][0] / r['h5_cold'][0]:.1f}x)   target >= 25x")
        print(f"  nilearn-masker / preprocess nifti        {r['nilearn'][0] / r['gz'][0]:5.1f}x faster")
        print(f"  peak RSS nilearn-masker / preprocess hdf5 {r['nilearn'][1] / r['h5'][1]:5.1f}x")
    subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
