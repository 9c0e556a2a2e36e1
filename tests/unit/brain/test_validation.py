"""The validation split: a seeded draw of each subject's training images (every repeat on the same
side), left out of training, predicted by ``infer --split val``; what every choice is made on."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from braindecode_pkg.brain.data import load_subject, parse_validation, validation_ids
from braindecode_pkg.errors import InputError
from tests.unit.brain.test_train import small_run, toy  # noqa: F401 (toy: the fixture)


def test_parse_validation_forms():
    assert parse_validation(None) is None and parse_validation(0) is None and parse_validation("0:3") is None
    assert parse_validation(12) == (12, 0) and parse_validation("12:3") == (12, 3)
    assert parse_validation({"images": 5, "seed": 2}) == (5, 2) and parse_validation({"images": 0}) is None
    with pytest.raises(InputError, match="IMAGES:SEED"):
        parse_validation("ten")
    with pytest.raises(InputError, match=">= 0"):
        parse_validation(-1)


def test_the_split_leaves_whole_images_out_and_is_seeded(toy):  # noqa: F811
    prep = toy["prep"][2]
    everything = load_subject(prep, split="train")
    with h5py.File(prep) as f:
        ids, is_test = f["nsd_id"][:], f["is_test"][:].astype(bool)
    val_ids = validation_ids(ids, is_test, "subj02", (5, 0))
    assert len(val_ids) == 5 and not np.isin(val_ids, toy["test_ids"]).any()
    assert np.array_equal(val_ids, validation_ids(ids, is_test, "subj02", (5, 0)))  # seeded
    assert not np.array_equal(val_ids, validation_ids(ids, is_test, "subj02", (5, 1)))
    assert not np.array_equal(val_ids, validation_ids(ids, is_test, "subj03", (5, 0)))  # per subject
    tr = load_subject(prep, split="train", validation=(5, 0))
    va = load_subject(prep, split="val", validation="5:0")
    assert np.array_equal(np.unique(va.nsd_id), val_ids)
    assert not np.isin(tr.nsd_id, val_ids).any()  # no repeat of a validation image is trained on
    assert len(tr) + len(va) == len(everything)  # and nothing else is left out
    assert sorted(np.concatenate([tr.nsd_id, va.nsd_id]).tolist()) == sorted(everything.nsd_id.tolist())
    # one set per subject whatever sessions a model trains on: drawn over all sessions, and a
    # model of the first session loses only those of them that session shows
    with h5py.File(prep) as f:
        session = f["session"][:]
    first = load_subject(prep, split="train", sessions="first:1", validation=(5, 0))
    in_first = np.isin(ids[session == 1], val_ids)
    assert not np.isin(first.nsd_id, val_ids).any()
    assert len(first) == int(((session == 1) & ~is_test).sum()) - int(in_first[~is_test[session == 1]].sum())
    assert set(va.session.tolist()) == set(np.unique(session[np.isin(ids, val_ids)]).tolist())
    assert len(set(va.session.tolist())) > 1  # this draw spans sessions
    with pytest.raises(InputError, match="needs a validation split"):
        load_subject(prep, split="val")


def test_training_and_infer_use_the_split(toy, tmp_path):  # noqa: F811
    from braindecode_pkg.cli import main

    args = ["--embed", str(toy["embed"]), "--validation", "4:1", "--quiet"]
    out = tmp_path / "m"
    assert main(["train", "--regime", "pretrain", "--prep", *[f"{s}={p}" for s, p in toy["prep"].items()],
                 *args, "--set", "train.steps=2", "--set", "model.width=16", "--out", str(out)]) == 0
    import json

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["info"]["validation"] == {"images": 4, "seed": 1}
    val = tmp_path / "val.h5"
    assert main(["infer", "--model", str(out), "--prep", str(toy["prep"][2]), "--split", "val",
                 "--validation", "4:1", "--out", str(val)]) == 0
    with h5py.File(val) as f, h5py.File(toy["prep"][2]) as p:
        want = validation_ids(p["nsd_id"][:], p["is_test"][:].astype(bool), "subj02", (4, 1))
        assert f["nsd_id"][:].tolist() == want.tolist() and f.attrs["split"] == "val"
        assert f["avg_betas/pooled"].shape[0] == 4
    summ = json.loads((out / "train_summary.json").read_text())
    trained = sum(v["trials"] for v in summ["subjects"].values())
    assert trained == sum(len(load_subject(p, split="train", validation=(4, 1))) for p in toy["prep"].values())


def test_infer_samples_the_prior_with_the_models_settings_or_the_ones_given(toy, tmp_path):  # noqa: F811
    """--prior-steps / --prior-guidance override the model's sampling (what the validation images
    choose them with) and are recorded; the model's own values give the default's samples."""
    import json

    from braindecode_pkg.cli import main

    out = tmp_path / "m"
    prior = json.dumps({"width": 16, "depth": 1, "timesteps": 20, "sample_steps": 5})
    assert main(["train", "--regime", "pretrain", "--prep", *[f"{s}={p}" for s, p in toy["prep"].items()],
                 "--embed", str(toy["embed"]), "--quiet", "--set", "train.steps=3", "--set", "model.width=16",
                 "--set", f"model.prior={prior}", "--out", str(out)]) == 0

    def infer(name, *extra):
        f = tmp_path / f"{name}.h5"
        assert main(["infer", "--model", str(out), "--prep", str(toy["prep"][2]), "--prior", *extra,
                     "--out", str(f)]) == 0
        with h5py.File(f) as h:
            return h["avg_betas/prior"][:], json.loads(h.attrs["prior_sampling"])

    default, used = infer("default")
    assert used == {"steps": 5, "guidance": 1.0}
    same, used_same = infer("same", "--prior-steps", "5", "--prior-guidance", "1")
    np.testing.assert_array_equal(same, default)
    other, used_other = infer("other", "--prior-steps", "2", "--prior-guidance", "3")
    assert used_other == {"steps": 2, "guidance": 3.0} and not np.allclose(other, default)
    assert main(["infer", "--model", str(out), "--prep", str(toy["prep"][2]), "--prior", "--prior-steps", "0",
                 "--out", str(tmp_path / "bad.h5")]) == 2
