"""Files that are there but not what they should be stop the run with their name, instead of a
silent fallback (issue 20): an unreadable image decoder ``braindecode.json`` (its sampling
defaults would jump to diffusers'), a checkpoint whose ``state.json`` records no checksums, a
decode file without ``n_reconstructed``."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from braindecode_pkg.brain import train
from braindecode_pkg.errors import InputError
from tests.unit.brain.test_train import small_run, toy  # noqa: F401 (toy: the fixture)


def test_unreadable_decoder_info_is_an_error(tmp_path):
    from braindecode_pkg.decoders import image_decoder as idec
    from braindecode_pkg.sim.recipes import image_decoder as tid

    d = tmp_path / "dec"
    pipe = idec.build_unclip_pipeline(12, tid.TINY_VAE_CFG, tid.TINY_UNET_CFG, image_size=32, seed=1)
    idec.save_pipeline(pipe, d, info={"sampling": {"guidance_scale": 2.5, "num_inference_steps": 3}})
    dec = idec.ImageDecoder.load({"pipeline_dir": str(d)})
    assert dec.defaults()["guidance_scale"] == 2.5 and dec.defaults()["num_inference_steps"] == 3
    (d / idec.INFO_FILE).write_text('{"sampling": {"guidance_scale": 2.5,')  # cut short
    with pytest.raises(InputError, match="braindecode.json: unreadable"):
        idec.ImageDecoder.load({"pipeline_dir": str(d)})
    (d / idec.INFO_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="expected a JSON object"):
        idec.ImageDecoder.load({"pipeline_dir": str(d)})
    (d / idec.INFO_FILE).unlink()  # none at all (a downloaded pipeline): diffusers' defaults
    assert idec.ImageDecoder.load({"pipeline_dir": str(d)}).defaults() == idec._DEFAULTS


def test_checkpoint_without_checksums_is_not_resumed(toy, tmp_path, capsys):  # noqa: F811
    run = small_run(**{"train.steps": 6, "train.checkpoint_every": 2})
    kw = dict(prep=toy["prep"], embed=toy["embed"], run=run, progress=False)
    out = tmp_path / "m"
    train.run_regime("pretrain", out_dir=out, stop_after=4, **kw)
    ckpt = train.latest_checkpoint(out)
    st = json.loads((ckpt / "state.json").read_text())
    assert train.checkpoint_problem(ckpt) is None and set(st["sha256"]) >= {"model.safetensors"}
    del st["sha256"]
    (ckpt / "state.json").write_text(json.dumps(st))
    assert train.checkpoint_problem(ckpt) == "state.json records no checksums (the checkpoint cannot be verified)"
    s = train.run_regime("pretrain", out_dir=out, **kw)
    # resumed from the older checkpoint (step 2), whose files its checksums vouch for, not from step 4
    assert s["start_step"] == 2 and s["steps_run"] == 4
    assert "step-00000004: state.json records no checksums" in capsys.readouterr().err


def test_decode_file_without_n_reconstructed_is_an_error(tmp_path):
    from braindecode_pkg.evaluate.score import _n_reconstructed

    f = tmp_path / "decode.h5"
    with h5py.File(f, "w") as h:
        h["nsd_id"] = np.arange(5)
        h.attrs["n_reconstructed"] = 3
    assert _n_reconstructed(tmp_path, 5) == 3
    with h5py.File(f, "a") as h:
        h.attrs["n_reconstructed"] = 9
    with pytest.raises(InputError, match="n_reconstructed 9 outside 0..5"):
        _n_reconstructed(tmp_path, 5)
    with h5py.File(f, "a") as h:
        del h.attrs["n_reconstructed"]
    with pytest.raises(InputError, match="decode.h5: no n_reconstructed attribute"):
        _n_reconstructed(tmp_path, 5)


def test_captioner_pairs_need_a_held_out_set(tmp_path, capsys):
    """A mapper trained on an embed file with a random split could train on NSD's shared 1000."""
    from braindecode_pkg.cli import main
    from braindecode_pkg.sim.recipes import captioner as tcap

    lm = tmp_path / "gpt2"
    tok = tcap.build_tokenizer(["a red circle", "a blue star"], 64)
    tcap.build_lm(tok, tcap.TINY_LM_CFG).save_pretrained(lm)
    tok.save_pretrained(lm)
    h5 = tmp_path / "e.h5"
    with h5py.File(h5, "w") as f:
        f["nsd_id"] = np.arange(10)
        f["image_pooled"] = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
        f["captions"] = np.array([["a red circle"] + [""] * 4] * 10, dtype=h5py.string_dtype())
        f["n_captions"] = np.ones(10, np.int8)
    argv = ["train-captioner", "--pairs", str(h5), "--lm", str(lm), "--out", str(tmp_path / "cap"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "without --nsd-root" in err and "--heldout-ids" in err and not (tmp_path / "cap").exists()
    ids = tmp_path / "held.txt"
    ids.write_text("7\n8 9\n")
    assert main([*argv, "--heldout-ids", str(ids), "--steps", "2", "--batch-size", "4"]) == 0
    doc = json.loads((tmp_path / "cap" / "config.json").read_text())["braindecode"]
    assert doc["n_train_images"] == 7 and doc["heldout"]["n_heldout"] == 3
    ids.write_text("7, eight\n")
    assert main([*argv, "--heldout-ids", str(ids)]) == 2 and "--heldout-ids" in capsys.readouterr().err
