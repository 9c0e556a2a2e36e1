"""Issue #6 item 5: bad input across the pipeline gives one clear message (the file or value and
what is wrong) from the CLI, exit status 2, no traceback, before any model is loaded or data read.
The workflow's parse-time checks of the same cases are in tests/workflow/test_bad_input_workflow.py.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from braindecode_pkg import cli  # noqa: E402
from braindecode_pkg.data.layout import NSDPaths  # noqa: E402
from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.weights_file import check_weights_file  # noqa: E402
from tests.conftest import PickleBomb  # noqa: E402


@pytest.fixture
def nsd(sim_root, tmp_path):
    """A copy of the tiny nsd-sim root (hard links: replace a file, never write into one)."""
    dst = tmp_path / "nsd"
    shutil.copytree(sim_root, dst, copy_function=os.link)
    return NSDPaths(dst)


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a CLIP model is loaded: the checks must come first."""
    def load(*a, **k):
        raise AssertionError("a CLIP model was loaded before the input was checked")

    monkeypatch.setattr(mclip.ClipEncoder, "load", classmethod(load))


def one_error(capsys, rc) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def embed(nsd, tmp_path, *extra, subjects="1", clip="sim"):
    return cli.main(["embed", "--nsd-root", str(nsd.root), "--subjects", subjects, "--clip", clip,
                     "--out", str(tmp_path / "out/clip.h5"), "--quiet", *extra])


def replace(path, data: bytes):
    path.unlink()
    path.write_bytes(data)


# ----------------------------------------------------------------------------- weights: pickles
def test_clip_weights_that_are_a_plain_pickle_are_refused_unopened(nsd, tmp_path, capsys, no_model):
    marker = tmp_path / "UNPICKLED"
    evil = tmp_path / "open_clip_pytorch_model.bin"
    evil.write_bytes(pickle.dumps({"visual.proj": PickleBomb(marker)}))
    rc = embed(nsd, tmp_path, clip=json.dumps({"arch": "ViT-B-32", "pretrained": str(evil)}))
    err = one_error(capsys, rc)
    assert str(evil) in err and "plain Python pickle" in err and "never loaded" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_torch_checkpoint_holding_objects_is_refused_unopened(tmp_path):
    marker = tmp_path / "UNPICKLED"
    evil = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2), "x": PickleBomb(marker)}, evil)
    with pytest.raises(InputError, match="its pickle holds objects other than tensors") as e:
        check_weights_file(evil, "CLIP weights")
    assert str(evil) in str(e.value) and not marker.exists()
    # the loaders go through the same check: the feature nets of evaluate
    from braindecode_pkg.evaluate.images import load_feature_net

    with pytest.raises(InputError, match="its pickle holds objects other than tensors"):
        load_feature_net("alexnet", evil)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(2)}, good)
    assert check_weights_file(good) == "torch-zip"


def test_weights_that_are_neither_safetensors_nor_torch(tmp_path):
    html = tmp_path / "model.bin"
    html.write_text("<html>404 Not Found</html>")
    with pytest.raises(InputError, match="model.bin: weights file is not safetensors nor a torch checkpoint"):
        check_weights_file(html)
    html = html.rename(tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="model.safetensors: not a readable safetensors file"):
        check_weights_file(html)


# ----------------------------------------------------------------------------- captions
@pytest.mark.parametrize("content, what", [
    (b"image_id,caption\n1,a cat\n", "not JSON"),
    (b"[1, 2, 3]", "expected a JSON object with an 'annotations' list, got list"),
    (json.dumps({"images": []}).encode(), "with keys ['images']"),
    (json.dumps({"annotations": [{"image_id": 1, "id": 2, "text": "a cat"}]}).encode(), "annotation 0 is"),
])
def test_caption_file_not_coco_json(nsd, tmp_path, capsys, no_model, content, what):
    f = nsd.captions("train2017")
    replace(f, content)
    err = one_error(capsys, embed(nsd, tmp_path))
    assert f"{f}: not a COCO caption file" in err and what in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- image brick
@pytest.mark.parametrize("shape, dtype", [((40, 3, 16, 16), np.uint8),  # channels first
                                          ((40, 16, 16, 3), np.float32),  # not 8-bit
                                          ((40, 16, 16), np.uint8)])  # grey
def test_image_brick_with_the_wrong_shape(nsd, tmp_path, capsys, no_model, shape, dtype):
    nsd.stimuli.unlink()
    with h5py.File(nsd.stimuli, "w") as f:
        f.create_dataset("imgBrick", shape=shape, dtype=dtype)
    err = one_error(capsys, embed(nsd, tmp_path))
    assert f"{nsd.stimuli}: imgBrick has shape {shape}" in err and "expected (n_images, H, W, 3) uint8" in err
    rc = cli.main(["latents", "--nsd-root", str(nsd.root), "--subjects", "1", "--image-decoder", "sim",
                   "--out", str(tmp_path / "l.h5")])
    assert "imgBrick has shape" in one_error(capsys, rc)


def test_image_brick_too_short_for_the_shown_images(nsd, tmp_path, capsys, no_model):
    nsd.stimuli.unlink()
    with h5py.File(nsd.stimuli, "w") as f:
        f.create_dataset("imgBrick", shape=(10, 16, 16, 3), dtype=np.uint8)
    err = one_error(capsys, embed(nsd, tmp_path))
    assert "imgBrick holds 10 images; nsd id" in err


# ----------------------------------------------------------------------------- subjects
def test_subject_absent_from_the_data(nsd, tmp_path, capsys, no_model):
    err = one_error(capsys, embed(nsd, tmp_path, subjects="1,5"))
    assert "subject 5 has no data in this NSD root" in err and str(nsd.ppdata(5)) in err
    rc = cli.main(["preprocess", "--nsd-root", str(nsd.root), "--subject", "5", "--out", str(tmp_path / "p.h5")])
    assert "subject 5 has no data in this NSD root" in one_error(capsys, rc)
    rc = cli.main(["preprocess", "--nsd-root", str(nsd.root), "--subject", "9", "--out", str(tmp_path / "p.h5")])
    assert "subject 9 is absent from the design" in one_error(capsys, rc)
    assert not (tmp_path / "p.h5").exists()


def test_nsd_root_check_for_the_workflow(nsd):
    from braindecode_pkg.data.stimuli import check_nsd_root

    check_nsd_root(nsd.root, [1, 2])  # the real layout passes
    with pytest.raises(InputError, match=r"subject\(s\) 3, 5 absent from the data.*subjects with data: subj01, subj02"):
        check_nsd_root(nsd.root, [1, 3, 5])
    replace(nsd.captions("val2017"), b"<html>")
    with pytest.raises(InputError, match="captions_val2017.json: not a COCO caption file"):
        check_nsd_root(nsd.root, [1])


# ----------------------------------------------------------------------------- configs
def test_training_config_failing_its_checks(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("train: {steps: many}\n")
    rc = cli.main(["train", "--regime", "pretrain", "--prep", "1=x.h5", "--embed", "e.h5", "--config", str(cfg),
                   "--out", str(tmp_path / "m")])
    assert "train.steps = 'many': expected a number" in one_error(capsys, rc)
    cfg.write_text("optimiser: {lr: 1}\n")
    rc = cli.main(["train", "--regime", "pretrain", "--prep", "1=x.h5", "--embed", "e.h5", "--config", str(cfg),
                   "--out", str(tmp_path / "m")])
    assert "unknown section(s) ['optimiser']" in one_error(capsys, rc)
    assert not (tmp_path / "m").exists()
