"""Issue #6 item 4 under snakemake: the embed job is killed (SIGKILL, as a cluster's scheduler or
the OOM killer would), snakemake reports the failure, and running snakemake again resumes the job
from its checksummed partial file and ends with the bytes of an uninterrupted run."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[2]
TARGET = "results/embed/clip.h5"


def _snakemake(work: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                             "--cores", "2", "--rerun-incomplete", TARGET, "--configfile", str(REPO / "config/tiny.yaml")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _embed_job(p: subprocess.Popen):
    for c in psutil.Process(p.pid).children(recursive=True):
        try:
            cmd = c.cmdline()
        except psutil.Error:
            continue
        if "braindecode_pkg" in cmd and "embed" in cmd:
            return c
    return None


@pytest.mark.slow
def test_killed_embed_job_resumes_under_snakemake(tmp_path):
    ref, work = tmp_path / "ref", tmp_path / "work"
    p = _snakemake(ref)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    work.mkdir()
    shutil.copytree(ref / "results/sim", work / "results/sim")  # the same simulated NSD: skip simulating
    p = _snakemake(work)
    partial = work / (TARGET + ".partial")
    t0 = time.monotonic()
    while p.poll() is None and not partial.exists() and time.monotonic() - t0 < 600:
        time.sleep(0.01)
    time.sleep(random.Random(4).uniform(0.5, 2.0))
    job = _embed_job(p)
    assert job is not None, "the embed job ended before it could be killed"
    job.kill()
    out, _ = p.communicate(timeout=300)
    assert p.returncode != 0 and not (work / TARGET).exists() and partial.exists(), out[-3000:]
    p = _snakemake(work)
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
    assert (work / TARGET).read_bytes() == (ref / TARGET).read_bytes()
    assert not partial.exists()
