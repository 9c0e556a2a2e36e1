"""The training loop: multi-subject batch stream, regimes, resume after a kill, DDP = one process, CLI.

Toy data (:func:`write_toy`) with distinct sizes everywhere: subjects 1, 2, 5 with 37, 23 and 29
voxels, 3 sessions of 24 trials, 16 training images per subject plus 8 shared test images,
CLIP pooled d=12, tokens (5, 7), VAE latent (3, 4, 6). Voxels are a noisy linear mixing of a
6-d latent of each image; the targets are fixed functions of that latent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from braindecode_pkg import cli
from braindecode_pkg.brain import train
from braindecode_pkg.brain.data import BatchStream, load_subject, load_targets, select_sessions
from braindecode_pkg.errors import InputError
from braindecode_pkg.brain.model import BrainModel

VOXELS = {1: 37, 2: 23, 5: 29}
N_SESS, PER_SESS = 3, 24
D, TOK, LAT = 12, (5, 7), (3, 4, 6)
N_TEST = 8
REPO = Path(__file__).resolve().parents[3]


def write_toy(root: Path, subjects=VOXELS, seed: int = 0) -> dict:
    """Write prep files (the preprocess contract), an embeddings file and a latent file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    test_ids = np.arange(1000, 1000 + N_TEST)
    n_img_all = 200
    z_all = rng.normal(size=(2000, 6))
    A = rng.normal(size=(6, D))
    B = rng.normal(size=(6, TOK[0] * TOK[1]))
    C = rng.normal(size=(6, int(np.prod(LAT))))
    prep = {}
    used = [test_ids]
    for k, (s, nv) in enumerate(subjects.items()):
        own = np.arange(100 * (k + 1), 100 * (k + 1) + 16)
        used.append(own)
        n_t = N_SESS * PER_SESS
        # each own image 3 times, each test image 3 times; shuffled over the sessions
        ids = np.concatenate([np.repeat(own, 3), np.repeat(test_ids, 3)])
        ids = rng.permutation(ids)[:n_t]
        mix = rng.normal(size=(6, nv))
        betas = z_all[ids] @ mix + rng.normal(scale=0.5, size=(n_t, nv))
        betas = ((betas - betas.mean(0)) / betas.std(0)).astype(np.float32)
        session = np.repeat(np.arange(1, N_SESS + 1), PER_SESS)
        occ = np.zeros(n_t, np.int64)
        seen: dict = {}
        for i, x in enumerate(ids):
            occ[i] = seen.get(x, 0)
            seen[x] = occ[i] + 1
        path = root / f"subj{s:02d}.h5"
        with h5py.File(path, "w") as f:
            f["betas"] = betas
            f["nsd_id"] = ids.astype(np.int64)
            f["session"] = session
            f["trial"] = np.arange(n_t)
            f["repeat"] = occ
            f["is_test"] = np.isin(ids, test_ids)
            f["voxel_ijk"] = np.stack(np.unravel_index(np.arange(nv), (nv, 1, 1)), 1)
            f.attrs["subject"] = s
            f.attrs["normalisation"] = "session"
        prep[s] = path
    ids = np.unique(np.concatenate(used))
    z = z_all[ids]
    pooled = np.tanh(z @ A)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    embed = root / "clip.h5"
    with h5py.File(embed, "w") as f:
        f["nsd_id"] = ids.astype(np.int64)
        f["image_pooled"] = pooled.astype(np.float32)
        f["image_tokens"] = (z @ B).reshape(-1, *TOK).astype(np.float32)
    latent = root / "latent.h5"
    with h5py.File(latent, "w") as f:
        f["nsd_id"] = ids.astype(np.int64)
        f["latent"] = (z @ C).reshape(-1, *LAT).astype(np.float32) * 0.3
    del n_img_all
    return {"prep": prep, "embed": embed, "latent": latent, "test_ids": test_ids, "root": root}


def small_run(**over) -> train.RunConfig:
    base = {"model.width": 24, "model.n_blocks": 1, "train.steps": 6, "train.batch_size": 16,
            "train.lr": 3e-3, "train.checkpoint_every": 2, "train.warmup": 0.0}
    base.update(over)
    return train.load_run_config(None, [f"{k}={json.dumps(v)}" for k, v in base.items()])


def _weights(d):
    from safetensors.torch import load_file

    return load_file(str(Path(d) / "model.safetensors"))


def _assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0 if atol == 0 else 1e-4, msg=k)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    torch.set_num_threads(1)
    return write_toy(tmp_path_factory.mktemp("toy"))


# ------------------------------------------------------------------------------------ data
def test_select_sessions():
    assert select_sessions("all", [3, 1, 2]) == [1, 2, 3]
    assert select_sessions("first:2", [3, 1, 2]) == [1, 2]
    assert select_sessions(1, [4, 2]) == [2]
    assert select_sessions("1,3", [1, 2, 3]) == [1, 3]
    for bad in ("first:0", "first:4", "first:x", "7", "a-b"):
        with pytest.raises(InputError):
            select_sessions(bad, [1, 2, 3])


def test_run_config_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  width: 64\nloss:\n  temperature: 2e-2\ntrain:\n  lr: 1e-3\n  steps: 10\n")
    rc = train.load_run_config(f, ["train.steps=20", "model.adapter_rank=8"])
    assert rc.training().lr == 1e-3 and rc.training().steps == 20 and rc.losses().temperature == 0.02
    assert rc.model == {"width": 64, "adapter_rank": 8}
    for bad in (["train.lr=fast"], ["train.nope=1"], ["lr=1"], ["other.lr=1"]):
        with pytest.raises(InputError):
            train.load_run_config(None, bad)


def test_load_subject_splits_and_targets(toy):
    tr = load_subject(toy["prep"][2], split="train", sessions="first:1")
    assert tr.key == "subj02" and tr.n_voxels == 23 and set(tr.session) == {1}
    assert not np.isin(tr.nsd_id, toy["test_ids"]).any()
    te = load_subject(toy["prep"][2], split="test")
    assert np.isin(te.nsd_id, toy["test_ids"]).all()
    with pytest.raises(InputError, match="holds subj02, not subj03"):
        load_subject(toy["prep"][2], subject=3)
    tg = load_targets(toy["embed"], heads="available", latent=toy["latent"], ids=tr.nsd_id)
    assert tg.shapes() == {"pooled": (D,), "tokens": TOK, "latent": LAT}
    with pytest.raises(InputError, match="no row for nsd id 99999"):
        load_targets(toy["embed"], ids=[99999])


def test_batch_stream_multi_subject():
    counts = {"subj01": 50, "subj02": 30, "subj05": 20}
    s = BatchStream(counts, 16, seed=3)
    assert s.per_epoch == 100 // 16
    seen = {k: [] for k in counts}
    for step in range(s.per_epoch):
        b = s.batch(step)
        assert sum(len(v) for v in b.values()) == 16
        assert list(b) == [k for k in counts if k in b]  # subjects in a fixed order
        for k, v in b.items():
            seen[k].extend(v.tolist())
    total_seen = sum(len(v) for v in seen.values())
    assert total_seen == 16 * s.per_epoch
    for k, v in seen.items():
        assert len(set(v)) == len(v) and max(v) < counts[k]  # an epoch never repeats a trial
    assert sum(len(b) > 1 for b in (s.batch(i) for i in range(s.per_epoch))) == s.per_epoch
    # the same stream again, and the processes' slices partition the global batch
    s2 = BatchStream(counts, 16, seed=3)
    for step in (0, 5, 17):
        g = s2.batch(step)
        parts = [s2.local(step, r, 4) for r in range(4)]
        for k in counts:
            mine = np.concatenate([p.get(k, np.zeros(0, int)) for p in parts])
            assert sorted(mine.tolist()) == sorted(g.get(k, np.zeros(0, int)).tolist())
        assert all(sum(len(v) for v in p.values()) == 4 for p in parts)
    assert not all(np.array_equal(s.batch(0)[k], s.batch(s.per_epoch)[k]) for k in s.batch(0))


# ---------------------------------------------------------------------------------- training
def test_pretrain_different_voxel_counts_in_one_stream(toy, tmp_path):
    run = small_run(**{"model.prior": {"width": 16, "depth": 1, "timesteps": 10, "sample_steps": 3},
                       "train.steps": 8, "model.adapter_rank": 5, "train.average_repeats": 0.5})
    out = tmp_path / "pre"
    s = train.run_regime("pretrain", prep=toy["prep"], embed=toy["embed"], latent=toy["latent"], out_dir=out,
                         run=run, progress=False)
    assert s["steps_run"] == 8 and set(s["subjects"]) == {"subj01", "subj02", "subj05"}
    m = BrainModel.from_pretrained(out)
    assert {k: a.n_voxels for k, a in m.adapters.items()} == {"subj01": 37, "subj02": 23, "subj05": 29}
    assert m.config.heads == ("pooled", "tokens", "latent") and m.prior is not None
    log = (out / "train_log.tsv").read_text().splitlines()
    head = log[0].split("\t")
    assert head[:4] == ["step", "epoch", "lr", "loss"] and "lowlevel" in head and "prior" in head
    assert "contrastive_pooled" in head and "contrastive_tokens" in head
    assert [int(r.split("\t")[0]) for r in log[1:]] == list(range(1, 9))
    assert not (out / "checkpoints").exists()  # removed once the model is written
    # every adapter learned (each subject's trials reached its own adapter)
    init = BrainModel(m.config)
    torch.manual_seed(run.training().seed)
    init = BrainModel(m.config)
    for k in m.adapters:
        assert not torch.equal(m.adapters[k].linear.weight, init.adapters[k].linear.weight)


def test_resume_after_kill_equals_straight_run(toy, tmp_path):
    run = small_run(**{"train.steps": 8, "train.checkpoint_every": 4,
                       "model.prior": {"width": 16, "depth": 1, "timesteps": 10}})
    kw = dict(prep=toy["prep"], embed=toy["embed"], run=run, progress=False)
    train.run_regime("pretrain", out_dir=tmp_path / "straight", **kw)
    killed = tmp_path / "killed"
    s = train.run_regime("pretrain", out_dir=killed, stop_after=6, **kw)  # dies 2 steps after the checkpoint
    assert s["steps_run"] == 6 and not (killed / "model.safetensors").exists()
    assert train.latest_checkpoint(killed).name == "step-00000004"
    assert len((killed / "train_log.tsv").read_text().splitlines()) == 1 + 6
    s = train.run_regime("pretrain", out_dir=killed, **kw)
    assert s["start_step"] == 4 and s["steps_run"] == 4
    _assert_same(_weights(tmp_path / "straight"), _weights(killed))
    a = (tmp_path / "straight" / "train_log.tsv").read_text().splitlines()
    b = (killed / "train_log.tsv").read_text().splitlines()
    assert [r.split("\t")[:4] for r in a] == [r.split("\t")[:4] for r in b]
    # a checkpoint never unpickles: only safetensors and JSON in it
    s = train.run_regime("pretrain", out_dir=tmp_path / "k2", stop_after=4, **kw)
    files = {p.suffix for p in train.latest_checkpoint(tmp_path / "k2").iterdir()}
    assert files <= {".safetensors", ".json"}
    other = small_run(**{"train.steps": 8, "train.checkpoint_every": 4, "train.lr": 1e-2})
    with pytest.raises(InputError, match="another configuration"):
        train.run_regime("pretrain", out_dir=tmp_path / "k2", **{**kw, "run": other})


def test_adapt_and_scratch(toy, tmp_path):
    run = small_run()
    two = {k: v for k, v in toy["prep"].items() if k != 5}
    train.run_regime("pretrain", prep=two, embed=toy["embed"], out_dir=tmp_path / "pre", run=run, progress=False)
    pre = _weights(tmp_path / "pre")
    frozen = small_run(**{"train.freeze_shared_steps": 6})
    s = train.run_regime("adapt", prep={5: toy["prep"][5]}, embed=toy["embed"], out_dir=tmp_path / "ad",
                         init=tmp_path / "pre", sessions="first:1", run=frozen, progress=False)
    assert s["subjects"]["subj05"]["sessions"] == [1]
    ad = _weights(tmp_path / "ad")
    # frozen shared parts and the other subjects' adapters are untouched; the new adapter learned
    for k, v in pre.items():
        torch.testing.assert_close(ad[k], v, rtol=0, atol=0, msg=k)
    assert "adapters.subj05.linear.weight" in ad and ad["adapters.subj05.linear.weight"].shape == (24, 29)
    # reproducible: the fresh adapter's initial weights come from the run's seed, not from
    # whatever the process's global random state holds (it did, and adapt varied run to run)
    torch.manual_seed(12345)
    train.run_regime("adapt", prep={5: toy["prep"][5]}, embed=toy["embed"], out_dir=tmp_path / "ad-again",
                     init=tmp_path / "pre", sessions="first:1", run=frozen, progress=False)
    _assert_same(_weights(tmp_path / "ad-again"), ad)
    inv = small_run(**{"train.adapter_init": "invert"})
    s = train.run_regime("adapt", prep={5: toy["prep"][5]}, embed=toy["embed"], out_dir=tmp_path / "ad2",
                         init=tmp_path / "pre", sessions="first:1", run=inv, progress=False)
    ad2 = _weights(tmp_path / "ad2")
    assert not torch.equal(ad2["encoder.blocks.0.fc1.weight"], pre["encoder.blocks.0.fc1.weight"])
    info = json.loads((tmp_path / "ad2" / "config.json").read_text())["info"]
    assert info["regime"] == "adapt" and info["init_subjects"] == ["subj01", "subj02"]
    a = info["adapter_init"]
    from braindecode_pkg.brain.ridge import DEFAULT_ALPHAS

    assert a["method"] == "invert" and a["inversion_loss"][1] < a["inversion_loss"][0]
    assert a["ridge_alpha"] in DEFAULT_ALPHAS  # the penalty cross-validation chose, from its grid
    s = train.run_regime("scratch", prep={5: toy["prep"][5]}, embed=toy["embed"], out_dir=tmp_path / "sc",
                         sessions="first:1", run=run, progress=False)
    assert BrainModel.from_pretrained(tmp_path / "sc").subjects == ["subj05"]
    with pytest.raises(InputError, match="needs --init"):
        train.run_regime("adapt", prep={5: toy["prep"][5]}, embed=toy["embed"], out_dir=tmp_path / "x", run=run)
    with pytest.raises(InputError, match="trains one subject"):
        train.run_regime("scratch", prep=two, embed=toy["embed"], out_dir=tmp_path / "x", run=run)


def test_infer_protocols_and_missing_adapter(toy, tmp_path):
    from braindecode_pkg.brain import infer

    run = small_run()
    two = {k: v for k, v in toy["prep"].items() if k != 5}
    train.run_regime("pretrain", prep=two, embed=toy["embed"], latent=toy["latent"], out_dir=tmp_path / "pre",
                     run=run, progress=False)
    out = infer.infer(tmp_path / "pre", toy["prep"][2], tmp_path / "e.h5", method="pretrain")
    m = BrainModel.from_pretrained(tmp_path / "pre").eval()
    te = load_subject(toy["prep"][2], split="test")
    with h5py.File(out) as f:
        ids = f["nsd_id"][:]
        assert np.array_equal(ids, np.unique(te.nsd_id))
        assert f.attrs["method"] == "pretrain" and f.attrs["subject"] == "subj02"
        assert f["avg_betas/pooled"].shape == (len(ids), D) and f["avg_outputs/tokens"].shape == (len(ids), *TOK)
        assert f["avg_betas/latent"].shape == (len(ids), *LAT)
        i = 3
        rows = te.nsd_id == ids[i]
        with torch.no_grad():
            xb = torch.from_numpy(te.betas[rows].mean(0, keepdims=True))
            np.testing.assert_allclose(f["avg_betas/pooled"][i], m({"subj02": xb})["pooled"][0].numpy(), atol=1e-5)
            per = m({"subj02": torch.from_numpy(te.betas[rows])})["pooled"].mean(0).numpy()
        np.testing.assert_allclose(f["avg_outputs/pooled"][i], per, atol=1e-5)
    with pytest.raises(InputError, match="subj05: this model has no adapter"):
        infer.infer(tmp_path / "pre", toy["prep"][5], tmp_path / "x.h5")
    # the CLI says it in one line and exits 2
    rc = cli.main(["infer", "--model", str(tmp_path / "pre"), "--prep", str(toy["prep"][5]),
                   "--out", str(tmp_path / "x.h5")])
    assert rc == 2 and not (tmp_path / "x.h5").exists()


def test_cli_train_ridge_infer(toy, tmp_path, capsys):
    prep = [f"{s}={p}" for s, p in toy["prep"].items() if s != 5]
    rc = cli.main(["train", "--regime", "pretrain", "--prep", *prep, "--embed", str(toy["embed"]),
                   "--out", str(tmp_path / "pre"), "--set", "train.steps=3", "--set", "model.width=16",
                   "--set", "train.batch_size=8", "--quiet"])
    assert rc == 0 and (tmp_path / "pre" / "model.safetensors").is_file()
    rc = cli.main(["train", "--regime", "adapt", "--prep", f"5={toy['prep'][5]}", "--embed", str(toy["embed"]),
                   "--init", str(tmp_path / "pre"), "--sessions", "first:1", "--out", str(tmp_path / "ad"),
                   "--set", "train.steps=2", "--set", "train.batch_size=8", "--quiet"])
    assert rc == 0
    rc = cli.main(["ridge", "--prep", str(toy["prep"][5]), "--embed", str(toy["embed"]), "--sessions", "first:2",
                   "--out", str(tmp_path / "ridge")])
    assert rc == 0
    for name in ("ad", "ridge"):
        rc = cli.main(["infer", "--model", str(tmp_path / name), "--prep", str(toy["prep"][5]),
                       "--out", str(tmp_path / f"{name}.h5"), "--method", name])
        assert rc == 0
        with h5py.File(tmp_path / f"{name}.h5") as f:
            assert f.attrs["method"] == name and "avg_betas/pooled" in f
    capsys.readouterr()
    rc = cli.main(["train", "--regime", "pretrain", "--prep", "1=/nonexistent.h5", "--embed", str(toy["embed"]),
                   "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "/nonexistent.h5" in err
    rc = cli.main(["train", "--regime", "pretrain", "--prep", "1", "--embed", str(toy["embed"]),
                   "--out", str(tmp_path / "x")])
    assert rc == 2 and "SUBJECT=FILE" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- DDP
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_matches_one_process(toy, tmp_path):
    """2 processes × 8 samples = 1 process × 16 samples: same loss (global-batch contrastive), same weights."""
    sets = ["model.width=16", "model.n_blocks=1", "model.dropout=0", "model.adapter_dropout=0",
            "loss.mixco_fraction=0", "train.steps=3", "train.batch_size=16", "train.lr=1e-3",
            "train.checkpoint_every=0", "train.threads=1"]
    args = ["train", "--regime", "pretrain", "--embed", str(toy["embed"]), "--latent", str(toy["latent"]),
            "--quiet", "--prep", *[f"{s}={p}" for s, p in toy["prep"].items()]]
    for s in sets:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "braindecode_pkg"]
    port = str(_free_port())
    procs = []
    for r in range(2):
        e = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen(cmd + args + ["--out", str(tmp_path / "ddp")], env=e, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0  # meanwhile, one process here
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    summ = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summ["world_size"] == 2
    la = [r.split("\t") for r in (tmp_path / "one" / "train_log.tsv").read_text().splitlines()[1:]]
    lb = [r.split("\t") for r in (tmp_path / "ddp" / "train_log.tsv").read_text().splitlines()[1:]]
    np.testing.assert_allclose([float(r[3]) for r in la], [float(r[3]) for r in lb], rtol=1e-5)
    _assert_same(_weights(tmp_path / "one"), _weights(tmp_path / "ddp"), atol=2e-6)


def test_memory_mapped_float16_targets_train_on_host_as_in_memory(toy, tmp_path):
    """float16 embeddings memory-mapped (all rows, left on the host, each batch's rows copied over)
    train the same model as the same values read into memory and placed on the device."""
    f16 = tmp_path / "clip16.h5"
    with h5py.File(toy["embed"], "r") as src, h5py.File(f16, "w") as f:
        f["nsd_id"] = src["nsd_id"][:]
        for n in ("image_pooled", "image_tokens"):
            f[n] = src[n][:].astype(np.float16)
    trials = {t.key: t for t in (load_subject(toy["prep"][s], split="train") for s in VOXELS)}
    ids = np.unique(np.concatenate([t.nsd_id for t in trials.values()]))
    mm = load_targets(f16, heads=("pooled", "tokens"), ids=ids, mmap=True)
    mem = load_targets(f16, heads=("pooled", "tokens"), ids=ids, mmap=False)
    assert isinstance(mm.arrays["tokens"], np.memmap) and mm.arrays["tokens"].dtype == np.float16
    assert len(mm.nsd_id) > len(ids) and mm.shapes() == mem.shapes() == {"pooled": (D,), "tokens": TOK}
    assert mem.arrays["tokens"].dtype == np.float32 and len(mem.nsd_id) == len(ids)
    np.testing.assert_array_equal(mm.arrays["tokens"][mm.rows(ids)], mem.arrays["tokens"])
    assert train._place_targets(mm.arrays["tokens"], "auto", torch.device("cpu")) is mm.arrays["tokens"]
    assert isinstance(train._place_targets(mem.arrays["tokens"], "auto", torch.device("cpu")), torch.Tensor)
    rows = torch.tensor([3, 0, 3, 7])
    torch.testing.assert_close(train._gather_targets(mm.arrays["pooled"], rows),
                               torch.from_numpy(mm.arrays["pooled"][[3, 0, 3, 7]].astype(np.float32)), rtol=0, atol=0)
    run = small_run()
    weights = {}
    for name, tg in (("host", mm), ("device", mem)):
        torch.manual_seed(0)
        model = BrainModel(train.model_config_for(run, trials, tg))
        train.fit(model, trials, tg, tmp_path / name, run=run, progress=False)
        weights[name] = _weights(tmp_path / name)
    _assert_same(weights["host"], weights["device"])
    with pytest.raises(InputError, match="targets_on 'gpu'"):
        small_run(**{"train.targets_on": "gpu"}).training()


def test_latent_targets_are_mapped_with_mapped_embeddings(toy, tmp_path, monkeypatch):
    """With memory-mapped CLIP targets, a latent file of the same images is mapped too (after a
    finiteness check remembered per file); one of other images is read into memory, row-aligned."""
    monkeypatch.setenv("BRAINDECODE_HASH_CACHE", str(tmp_path / "hashes"))
    ids = load_subject(toy["prep"][1], split="train").nsd_id
    mm = load_targets(toy["embed"], heads=("pooled",), latent=toy["latent"], ids=ids, mmap=True)
    mem = load_targets(toy["embed"], heads=("pooled",), latent=toy["latent"], ids=ids, mmap=False)
    assert isinstance(mm.arrays["latent"], np.memmap) and mm.arrays["latent"].shape[1:] == LAT
    assert isinstance(mem.arrays["latent"], np.ndarray) and not isinstance(mem.arrays["latent"], np.memmap)
    np.testing.assert_array_equal(mm.arrays["latent"][mm.rows(ids)], mem.arrays["latent"][mem.rows(ids)])
    assert list((tmp_path / "hashes").glob("*.latent-finite.json"))  # remembered: checked once per file
    # a latent file holding more images than the embed file: its rows for the embed file's images
    with h5py.File(toy["latent"], "r") as f:
        lid, lat = f["nsd_id"][:], f["latent"][:]
    extra = tmp_path / "latent_more.h5"
    with h5py.File(extra, "w") as f:
        f["nsd_id"] = np.concatenate([lid, [lid.max() + 1]])
        f["latent"] = np.concatenate([lat, np.full((1, *LAT), 5.0, np.float32)])
    more = load_targets(toy["embed"], heads=("pooled",), latent=extra, ids=ids, mmap=True)
    assert not isinstance(more.arrays["latent"], np.memmap) and len(more.arrays["latent"]) == len(more.nsd_id)
    np.testing.assert_array_equal(more.arrays["latent"], mm.arrays["latent"])
    # a NaN in a mapped latent file is refused, naming the file and the rows
    bad = tmp_path / "latent_nan.h5"
    lat[7, 1, 2, 3] = np.nan
    with h5py.File(bad, "w") as f:
        f["nsd_id"] = lid
        f["latent"] = lat
    with pytest.raises(InputError, match=r"latent_nan\.h5: latent contains NaN or inf \(rows 0\.\."):
        load_targets(toy["embed"], heads=("pooled",), latent=bad, ids=ids, mmap=True)
