"""Issue #6 item 4: faults. Each stage killed with SIGKILL at chosen points, then run again, ends with
the bytes (preprocess, embed) or the weights (train) of an uninterrupted run; a cache or an output
altered on disk is caught by its checksum and rebuilt; a full disk leaves nothing a later run trusts.

Two ways to kill: a forked child running the CLI's ``main`` that SIGKILLs itself at a named point
(``$BRAINDECODE_FAULT``, :func:`braindecode_pkg.io.fault_point`; deterministic, and no import time),
and a real ``python -m braindecode_pkg`` process killed from outside, a seeded random delay after
its first temporary file appears.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from braindecode_pkg import cli, io  # noqa: E402
from braindecode_pkg.sim import world as sim  # noqa: E402
from braindecode_pkg.embed.stimuli import partial_path  # noqa: E402
from braindecode_pkg.errors import InputError  # noqa: E402
from tests.unit.brain.test_train import write_toy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "BRAINDECODE_HASH_CACHE": "none", "OMP_NUM_THREADS": "1"}
ENV.pop("BRAINDECODE_FAULT", None)


# --------------------------------------------------------------------------------- helpers
def _child(argv, fault):
    os.environ["BRAINDECODE_FAULT"] = fault
    torch.set_num_threads(1)
    try:
        rc = cli.main(argv)
    except BaseException:  # noqa: BLE001
        rc = 3
    os._exit(rc)


def killed_at(argv, fault) -> int:
    """Run ``braindecode-pkg ARGV`` in a forked process that SIGKILLs itself at ``fault``; its exit code."""
    p = multiprocessing.get_context("fork").Process(target=_child, args=(list(argv), fault))
    p.start()
    p.join(300)
    assert p.exitcode == -signal.SIGKILL, f"{fault}: exit code {p.exitcode}, expected a SIGKILL"
    return p.exitcode


def killed_from_outside(argv, written, delay: float) -> int | None:
    """Start the real CLI, wait until it has written to a file matching ``written`` (a glob), then
    ``delay`` seconds more, and SIGKILL it."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-m", "braindecode_pkg", *argv], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)

    def ready():
        folder, pattern = Path(written).parent, Path(written).name
        return any(f.stat().st_mtime >= t0 for f in folder.glob(pattern)) if folder.is_dir() else False

    while p.poll() is None and not ready() and time.time() - t0 < 300:
        time.sleep(0.002)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    return p.wait()


def run(argv) -> int:
    return cli.main(list(argv))


def flip_byte(path: Path, dataset: str, byte: int = 5) -> None:
    """Alter one byte of a contiguous HDF5 dataset on disk (not through HDF5)."""
    with h5py.File(path, "r") as f:
        off = f[dataset].id.get_offset()
    assert off is not None
    with open(path, "r+b") as fh:
        fh.seek(off + byte)
        b = fh.read(1)
        fh.seek(off + byte)
        fh.write(bytes([b[0] ^ 0x40]))


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp" in p.name or p.name.endswith(".partial"))


# --------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny nsd-sim (1 subject, 2 sessions), a tiny random CLIP, and reference outputs of
    uninterrupted runs."""
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.sim.recipes import clip as train_clip

    root = tmp_path_factory.mktemp("faults")
    sim.simulate(sim.sim_config("tiny", subjects=(1,), sessions=2), root / "sim")
    torch.manual_seed(0)
    mclip.register_arch("bd-test-faults", train_clip.TINY_MODEL_CFG)
    mclip.save_local_dir(mclip.create_clip_model("bd-test-faults").eval(), root / "clip", train_clip.TINY_MODEL_CFG)
    w = {"root": root, "nsd": root / "sim" / "nsd", "clip": json.dumps({"local_dir": str(root / "clip")})}
    w["prep_argv"] = lambda out: ["preprocess", "--nsd-root", str(w["nsd"]), "--subject", "1", "--out", str(out),
                                  "--quiet"]
    w["embed_argv"] = lambda out: ["embed", "--nsd-root", str(w["nsd"]), "--subjects", "1", "--sessions", "1",
                                   "--clip", w["clip"], "--batch-size", "64", "--out", str(out), "--quiet"]
    assert run(w["prep_argv"](root / "ref/subj01.h5")) == 0
    assert run(w["embed_argv"](root / "ref/clip.h5")) == 0
    w["prep_ref"] = (root / "ref/subj01.h5").read_bytes()
    w["embed_ref"] = (root / "ref/clip.h5").read_bytes()
    return w


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.set_num_threads(1)
    t = write_toy(tmp_path_factory.mktemp("toy"))
    t["argv"] = lambda out: [
        "train", "--regime", "pretrain", "--prep", *[f"{s}={p}" for s, p in t["prep"].items()],
        "--embed", str(t["embed"]), "--out", str(out), "--quiet",
        "--set", "model.width=24", "--set", "model.n_blocks=1", "--set", "train.steps=8",
        "--set", "train.batch_size=16", "--set", "train.lr=3e-3", "--set", "train.checkpoint_every=2",
        "--set", "train.warmup=0.0", "--set", "train.threads=1"]
    assert run(t["argv"](t["root"] / "ref")) == 0
    return t


def _weights(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))


# training: on CPU a resumed run is bit-identical; allowed: 1e-6 (GPU kernels need not be deterministic)
TRAIN_ATOL = 1e-6


def assert_same_model(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=TRAIN_ATOL, rtol=0, msg=k)
    rows = [[r.split("\t")[:4] for r in (d / "train_log.tsv").read_text().splitlines()] for d in (a, b)]
    assert rows[0] == rows[1]  # step, epoch, lr, loss of every step


# ---------------------------------------------------------------------------------- preprocess
@pytest.mark.parametrize("fault", ["preprocess.session:1", "preprocess.session:2", "preprocess.before_rename"])
def test_preprocess_killed_then_rerun_gives_identical_bytes(world, tmp_path, fault):
    out = tmp_path / "prep/subj01.h5"
    killed_at(world["prep_argv"](out), fault)
    assert not out.exists() and len(leftovers(out.parent)) == 1  # the killed writer's temporary
    assert run(world["prep_argv"](out)) == 0
    assert out.read_bytes() == world["prep_ref"]
    assert leftovers(out.parent) == []  # the rerun removed the dead writer's temporary


def test_preprocess_killed_from_outside_at_random_times(world, tmp_path):
    out = tmp_path / "prep/subj01.h5"
    rng = random.Random(6)
    for _ in range(2):
        rc = killed_from_outside(world["prep_argv"](out), out.parent / ".subj01.h5.tmp-*", rng.uniform(0.0, 0.2))
        assert rc == -signal.SIGKILL or (rc == 0 and out.read_bytes() == world["prep_ref"])
    assert run(world["prep_argv"](out)) == 0
    assert out.read_bytes() == world["prep_ref"] and leftovers(out.parent) == []


# ---------------------------------------------------------------------------------- embed
@pytest.mark.parametrize("fault", ["embed.created", "embed.rows_written:2", "embed.batch_done:3",
                                   "embed.before_rename"])
def test_embed_killed_then_rerun_gives_identical_bytes(world, tmp_path, fault):
    out = tmp_path / "clip.h5"
    killed_at(world["embed_argv"](out), fault)
    assert not out.exists() and partial_path(out).exists()
    assert run(world["embed_argv"](out)) == 0
    assert out.read_bytes() == world["embed_ref"] and leftovers(tmp_path) == []


def test_embed_partial_altered_on_disk_is_detected_and_rebuilt(world, tmp_path, capsys):
    out = tmp_path / "clip.h5"
    killed_at(world["embed_argv"](out), "embed.batch_done:3")
    with h5py.File(partial_path(out), "r") as f:
        assert f["done"][:].sum() == 3 * 64
    flip_byte(partial_path(out), "image_tokens", byte=64 * 16 * 32 * 4 + 9)  # a byte of batch 2 (of 0, 1, 2)
    capsys.readouterr()
    assert run(world["embed_argv"](out)) == 0
    assert "1 batch(es) marked done do not match their checksum (first rows 64.." in capsys.readouterr().err
    assert out.read_bytes() == world["embed_ref"]


def test_embed_killed_from_outside_at_random_times(world, tmp_path):
    out = tmp_path / "clip.h5"
    killed_from_outside(world["embed_argv"](out), partial_path(out), random.Random(7).uniform(0.0, 1.0))
    assert run(world["embed_argv"](out)) == 0
    assert out.read_bytes() == world["embed_ref"] and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------- train
@pytest.mark.parametrize("fault", ["train.step:3", "train.checkpoint_files:2", "train.step:7"])
def test_train_killed_then_rerun_matches_uninterrupted(toy, tmp_path, fault):
    out = tmp_path / "model"
    killed_at(toy["argv"](out), fault)
    assert not (out / "model.safetensors").exists()
    assert run(toy["argv"](out)) == 0
    assert_same_model(toy["root"] / "ref", out)
    assert not (out / "checkpoints").exists()


def test_train_checkpoint_altered_on_disk_falls_back_to_an_older_one(toy, tmp_path, capsys):
    out = tmp_path / "model"
    killed_at(toy["argv"](out), "train.step:5")  # checkpoints at steps 2 and 4
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step-00000002", "step-00000004"]
    f = ck / "step-00000004" / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x10  # inside the last tensor: safetensors would load it without complaint
    f.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(toy["argv"](out)) == 0
    err = capsys.readouterr().err
    assert "step-00000004: optimizer.safetensors does not match its checksum; not resuming from it" in err
    assert_same_model(toy["root"] / "ref", out)


def test_train_killed_from_outside_at_random_times(toy, tmp_path):
    out = tmp_path / "model"
    rng = random.Random(8)
    for _ in range(2):  # once training has started (its step log is opened)
        killed_from_outside(toy["argv"](out), out / "train_log.tsv", rng.uniform(0.0, 0.5))
    assert run(toy["argv"](out)) == 0
    assert_same_model(toy["root"] / "ref", out)


def test_train_log_cut_mid_line_by_a_kill_is_repaired(tmp_path):
    from braindecode_pkg.brain.train import _open_log

    log = tmp_path / "train_log.tsv"
    log.write_text("step\tepoch\tlr\tloss\n1\t0.1\t0.001\t2.5\n2\t0.2\t0.001\t2.4\n3\t0.3\t0.001\t2.3\n1")
    fh = _open_log(log, start=2)  # resumed from the step-2 checkpoint; "1" is step 1x cut short
    fh.close()
    assert log.read_text() == "step\tepoch\tlr\tloss\n1\t0.1\t0.001\t2.5\n2\t0.2\t0.001\t2.4\n"


# ---------------------------------------------------------------------------------- caches
def test_preprocess_output_altered_on_disk_is_caught_by_the_stage_reading_it(world, toy, tmp_path, capsys):
    out = tmp_path / "subj01.h5"
    out.write_bytes(world["prep_ref"])
    from braindecode_pkg.brain.data import load_subject

    assert load_subject(out).betas.shape[1] == 80  # verified, unaltered
    flip_byte(out, "betas", byte=4 * 80 * 700 + 2)
    with pytest.raises(InputError, match="do not match the checksum recorded when it was written"):
        load_subject(out)
    capsys.readouterr()
    rc = cli.main(["train", "--regime", "scratch", "--prep", f"1={out}", "--embed", str(toy["embed"]),
                   "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(out) in err and "rerun the stage that writes it" in err
    out.unlink()  # what snakemake does when told to rebuild it
    assert run(world["prep_argv"](out)) == 0
    assert out.read_bytes() == world["prep_ref"] and io.verify_content(out)


def test_hash_cache_entry_altered_on_disk_is_recomputed(tmp_path):
    data = tmp_path / "betas.bin"
    data.write_bytes(os.urandom(1000))
    cache = tmp_path / "cache"
    true = io.sha256_file(data)
    assert io.cached_sha256(data, cache) == true
    (entry,) = cache.glob("*.json")
    rec = json.loads(entry.read_text())
    rec["sha256"] = "0" * 64  # valid JSON, wrong digest
    entry.write_text(json.dumps(rec))
    assert io.cached_sha256(data, cache) == true
    assert json.loads(entry.read_text())["sha256"] == true
    entry.write_text('{"path": ')  # truncated
    assert io.cached_sha256(data, cache) == true


def test_rendered_scene_cache_altered_on_disk_is_rendered_again(world, tmp_path, monkeypatch):
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.sim.recipes import clip as train_clip

    enc = mclip.ClipEncoder.load(json.loads(world["clip"]))
    cache = tmp_path / "cache"
    first = train_clip.scene_set(1, train_clip._P_HELDOUT, 6, 1, enc, cache)["images"]
    (npy,) = cache.glob("scenes-*.npy")
    assert io.sidecar_intact(npy)
    rendered = []
    real = train_clip.render
    monkeypatch.setattr(train_clip, "render", lambda *a, **k: rendered.append(1) or real(*a, **k))
    assert np.array_equal(train_clip.scene_set(1, train_clip._P_HELDOUT, 6, 1, enc, cache)["images"], first)
    assert rendered == []  # intact: read from the cache
    data = bytearray(npy.read_bytes())
    data[-100] ^= 0xFF  # a pixel: np.load would not notice
    npy.write_bytes(bytes(data))
    assert np.array_equal(train_clip.scene_set(1, train_clip._P_HELDOUT, 6, 1, enc, cache)["images"], first)
    assert rendered == [1] and io.sidecar_intact(npy)  # rendered again and rewritten


# ---------------------------------------------------------------------------------- full disk
def test_write_failure_leaves_no_output_and_a_clear_message(world, tmp_path, monkeypatch, capsys):
    """ENOSPC injected in the middle of preprocess's write (no mount needed)."""
    from braindecode_pkg import preprocess as prep

    def full(name):
        if name == "preprocess.session":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))

    monkeypatch.setattr(prep, "fault_point", full)
    out = tmp_path / "prep/subj01.h5"
    rc = cli.main(world["prep_argv"](out))
    err = capsys.readouterr().err
    assert rc == 1 and "no space left on the device" in err and err.count("\n") == 1
    assert list(out.parent.iterdir()) == []
    monkeypatch.undo()
    assert run(world["prep_argv"](out)) == 0 and out.read_bytes() == world["prep_ref"]


def test_write_failure_in_a_training_checkpoint(toy, tmp_path, monkeypatch, capsys):
    """ENOSPC while the second checkpoint is written: one message; the half-written checkpoint is
    never resumed from; the rerun resumes from the first and ends as an uninterrupted run."""
    import safetensors.torch

    real, calls = safetensors.torch.save_file, []

    def save_file(tensors, filename, *a, **k):
        calls.append(filename)
        if "step-00000004.tmp" in filename and filename.endswith("optimizer.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    out = tmp_path / "model"
    capsys.readouterr()
    assert cli.main(toy["argv"](out)) == 1
    assert "no space left on the device writing" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()
    monkeypatch.undo()
    assert run(toy["argv"](out)) == 0
    assert_same_model(toy["root"] / "ref", out)


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere), grown with ``grow()``."""
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:80]})")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=16m", str(d)], check=True)

    try:
        yield d, grow
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_full_disk_preprocess_then_rerun(world, small_disk, capsys):
    d, grow = small_disk
    out = d / "subj01.h5"
    rc = cli.main(world["prep_argv"](out))
    err = capsys.readouterr().err
    assert rc == 1 and "no space left on the device" in err
    assert list(d.iterdir()) == []  # neither the output nor its temporary
    grow()
    assert run(world["prep_argv"](out)) == 0 and out.read_bytes() == world["prep_ref"]


def test_full_disk_embed_then_rerun(world, small_disk, capsys):
    d, grow = small_disk
    out = d / "clip.h5"
    rc = cli.main(world["embed_argv"](out))
    err = capsys.readouterr().err
    assert rc == 1 and "no space left on the device" in err
    assert not out.exists()  # only the checksummed .partial, if anything
    grow()
    assert run(world["embed_argv"](out)) == 0 and out.read_bytes() == world["embed_ref"]


def test_remembered_by_stat_computes_once_for_concurrent_callers(tmp_path):
    """Processes asking at the same time (a training job's data-parallel ranks verifying one
    embeddings file) wait on a lock: one computes, the others reuse its entry."""
    import threading
    import time

    from braindecode_pkg.io import remembered_by_stat

    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 1000)
    calls = []

    def slow(p):
        calls.append(p)
        time.sleep(0.3)
        return "verified"

    out = []
    ts = [threading.Thread(target=lambda: out.append(remembered_by_stat(f, tmp_path / "c", "check", slow)))
          for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out == ["verified"] * 3 and len(calls) == 1
    f.write_bytes(b"y" * 1000)  # changed: computed again
    assert remembered_by_stat(f, tmp_path / "c", "check", slow) == "verified" and len(calls) == 2
