"""The embed stage on a tiny nsd-sim with a tiny random CLIP: keys, values, captions, resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")
h5py = pytest.importorskip("h5py")

from braindecode_pkg import cli  # noqa: E402
from braindecode_pkg.data import nsd
from braindecode_pkg.sim import world as sim  # noqa: E402
from braindecode_pkg.data.layout import NSDPaths  # noqa: E402
from braindecode_pkg.embed.stimuli import embed_stimuli, partial_path, shown_images  # noqa: E402
from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.sim.recipes import clip as train_clip  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny nsd-sim (2 subjects x 1 session, 460 images) and a tiny random CLIP local-dir."""
    root = tmp_path_factory.mktemp("embed")
    sim.simulate(sim.sim_config("tiny", subjects=(1, 2), sessions=1), root / "sim")
    torch.manual_seed(0)
    mclip.register_arch("bd-test-embed", train_clip.TINY_MODEL_CFG)
    model = mclip.create_clip_model("bd-test-embed").eval()
    mclip.save_local_dir(model, root / "clip", train_clip.TINY_MODEL_CFG)
    return {"nsd": root / "sim" / "nsd", "clip": str(root / "clip"), "root": root}


def test_rows_keyed_by_nsd_id_match_direct_encoding(world, tmp_path):
    out = tmp_path / "clip.h5"
    cfg = json.dumps({"local_dir": world["clip"]})
    rc = cli.main(["embed", "--nsd-root", str(world["nsd"]), "--subjects", "1,2", "--clip", cfg,
                   "--out", str(out), "--batch-size", "200", "--quiet"])
    assert rc == 0 and out.is_file() and not partial_path(out).exists()
    paths = NSDPaths(world["nsd"])
    design = nsd.NSDDesign.load(paths.expdesign)
    want_ids = np.unique(np.concatenate([
        design.trials(s, nsd.available_sessions(paths, s)).nsd_id for s in (1, 2)
    ]))
    enc = mclip.ClipEncoder.load(cfg)
    with h5py.File(out, "r") as f:
        ids = f["nsd_id"][:]
        assert ids.dtype == np.int64 and np.array_equal(ids, want_ids)
        assert f["done"][:].all()
        pooled, tokens, text = f["image_pooled"][:], f["image_tokens"][:], f["text"][:]
        ncap, caps = f["n_captions"][:], f["captions"].asstr()[:]
        assert f.attrs["model"] == "clip" and json.loads(f.attrs["clip_config"])["local_dir"] == str(
            mclip.parse_clip_config(cfg).local_dir)
    assert pooled.shape == (len(ids), 16) and tokens.shape == (len(ids), 16, 32) and text.shape == (len(ids), 5, 16)
    # the first batch, re-encoded straight from imgBrick (same batch composition)
    with h5py.File(paths.stimuli, "r") as s:
        imgs = np.stack([s["imgBrick"][i] for i in ids[:200]])
    direct = enc.encode_images(imgs, batch_size=200)
    np.testing.assert_array_equal(pooled[:200], direct["pooled"])
    np.testing.assert_array_equal(tokens[:200], direct["tokens"])
    # captions: nsd-sim writes five per image, found through cocoId/cocoSplit
    assert (ncap == 5).all() and all(c for c in caps[:, 0])
    coco = {}
    for split in ("train2017", "val2017"):
        doc = json.loads(paths.captions(split).read_text())
        for a in doc["annotations"]:
            coco.setdefault(a["image_id"], []).append((a["id"], a["caption"]))
    import pandas as pd

    info = pd.read_csv(paths.stim_info, usecols=["cocoId", "nsdId"]).set_index("nsdId")["cocoId"]
    for r in (0, len(ids) // 2, len(ids) - 1):
        assert list(caps[r]) == [c for _, c in sorted(coco[int(info[ids[r]])])][:5]
    np.testing.assert_allclose(text[:3].reshape(15, 16), enc.encode_text(list(caps[:3].ravel())), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1, rtol=1e-5)


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_identical_bytes(world, tmp_path):
    cfg = {"local_dir": world["clip"]}
    common = dict(what="both", batch_size=64, progress=False)
    whole = embed_stimuli(world["nsd"], [2], cfg, tmp_path / "whole.h5", **common)

    enc = mclip.ClipEncoder.load(cfg)
    real = enc.encode_images
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Interrupt
        return real(*a, **k)

    enc.encode_images = flaky
    out = tmp_path / "resumed.h5"
    with pytest.raises(_Interrupt):
        embed_stimuli(world["nsd"], [2], cfg, out, encoder=enc, **common)
    assert not out.exists() and partial_path(out).exists()
    with h5py.File(partial_path(out), "r") as f:
        assert f["done"][:].sum() == 3 * 64
    calls["n"] = -10**9  # no more interruptions; count the batches the resumed run encodes
    embed_stimuli(world["nsd"], [2], cfg, out, encoder=enc, **common)
    n = len(shown_images(NSDPaths(world["nsd"]), [2]))
    assert calls["n"] + 10**9 == -(-n // 64) - 3  # only the batches not done
    assert out.read_bytes() == whole.read_bytes()


def test_partial_from_other_inputs_is_discarded(world, tmp_path):
    out = tmp_path / "e.h5"
    cfg = {"local_dir": world["clip"]}
    enc = mclip.ClipEncoder.load(cfg)
    real = enc.encode_images

    def stop(*a, **k):
        raise _Interrupt

    enc.encode_images = stop
    with pytest.raises(_Interrupt):
        embed_stimuli(world["nsd"], [1], cfg, out, what="pooled", batch_size=50, encoder=enc, progress=False)
    enc.encode_images = real
    embed_stimuli(world["nsd"], [1], cfg, out, what="tokens", batch_size=50, encoder=enc, progress=False)
    with h5py.File(out, "r") as f:
        assert "image_pooled" not in f and f["image_tokens"].shape[1:] == (16, 32) and f["done"][:].all()


def test_missing_clip_weights_fail_before_any_work(world, tmp_path, capsys):
    out = tmp_path / "x.h5"
    missing = tmp_path / "open_clip_pytorch_model.bin"
    rc = cli.main(["embed", "--nsd-root", str(world["nsd"]), "--subjects", "1", "--out", str(out),
                   "--clip", json.dumps({"arch": "ViT-H-14", "pretrained": str(missing)})])
    err = capsys.readouterr().err
    assert rc == 2 and str(missing) in err and "laion/CLIP-ViT-H-14" in err
    assert not out.exists() and not partial_path(out).exists()
    rc = cli.main(["embed", "--nsd-root", str(world["nsd"]), "--subjects", "1,a", "--out", str(out),
                   "--clip", world["clip"]])
    assert rc == 2 and "--subjects '1,a'" in capsys.readouterr().err
    with pytest.raises(InputError, match="what"):
        embed_stimuli(world["nsd"], [1], world["clip"], out, what="all")


def test_float16_storage_and_verification_before_use(world, tmp_path, monkeypatch):
    from braindecode_pkg.embed import stimuli as emb
    from braindecode_pkg.brain.data import load_targets

    monkeypatch.setenv("BRAINDECODE_HASH_CACHE", str(tmp_path / "hashes"))
    cfg = json.dumps({"local_dir": world["clip"]})
    outs = {}
    for dt in ("float32", "float16"):
        outs[dt] = tmp_path / f"clip-{dt}.h5"
        assert cli.main(["embed", "--nsd-root", str(world["nsd"]), "--subjects", "1", "--clip", cfg, "--dtype", dt,
                         "--out", str(outs[dt]), "--batch-size", "96", "--quiet"]) == 0
    with h5py.File(outs["float32"], "r") as a, h5py.File(outs["float16"], "r") as b:
        assert b.attrs["dtype"] == "float16" and a.attrs["dtype"] == "float32"
        for n in ("image_pooled", "image_tokens", "text"):
            assert b[n].dtype == np.float16 and b[n].shape == a[n].shape
            x, y = a[n][:], b[n][:].astype(np.float32)
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-3)
            assert (np.isnan(x) == np.isnan(y)).all()
        n_rows, tok_bytes = len(a["nsd_id"]), a["image_tokens"].id.get_storage_size()
    assert tok_bytes == 2 * h5py.File(outs["float16"], "r")["image_tokens"].id.get_storage_size()
    # the memory map sees the same values as h5py
    with h5py.File(outs["float16"], "r") as b:
        m = emb.contiguous_memmap(b["image_tokens"])
        np.testing.assert_array_equal(m, b["image_tokens"][:])
    # verified once per file (remembered by stat), then trusted
    calls = []
    real = emb._verify_embeddings
    monkeypatch.setattr(emb, "_verify_embeddings", lambda p: calls.append(p) or real(p))
    load_targets(outs["float16"], heads=("pooled",))
    load_targets(outs["float16"], heads=("pooled",))
    assert len(calls) == 1
    # a row altered on disk (same size; a new mtime) is caught before it is trained on
    off = h5py.File(outs["float16"], "r")["image_pooled"].id.get_offset()
    with open(outs["float16"], "r+b") as f:
        f.seek(off + 2 * 16 * 100 + 6)  # row 100 (batch 1: rows 96..191)
        f.write(b"\x00\x7c")  # float16 +inf
    with pytest.raises(InputError, match=r"rows 96\.\.191 do not match their checksum"):
        load_targets(outs["float16"], heads=("pooled",))
    assert n_rows > 192
