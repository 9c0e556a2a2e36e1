"""The CLIP wrapper: config resolution, safe weight loading, round trips, encoder outputs.

Tiny architectures only (a 32 px ViT and a 64 px ModifiedResNet with random weights), so the
whole file runs in seconds and never touches the network.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.decoders import clip as mclip  # noqa: E402
from braindecode_pkg.sim.recipes import clip as train_clip  # noqa: E402

TINY_VIT = "bd-test-tiny-vit"
TINY_RN = "bd-test-tiny-rn"
RN_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny():
    """A tiny ViT CLIP with seeded random weights, and its config."""
    mclip.register_arch(TINY_VIT, train_clip.TINY_MODEL_CFG)
    mclip.register_arch(TINY_RN, RN_CFG)
    torch.manual_seed(0)
    model = mclip.create_clip_model(TINY_VIT).eval()
    return model


def _images(n=5, size=(47, 39), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def _encoder(model):
    import open_clip
    from open_clip.model import get_model_preprocess_cfg

    return mclip.ClipEncoder(model, get_model_preprocess_cfg(model), open_clip.get_tokenizer(TINY_VIT))


TEXTS = ["a red circle on the sky.", "Two objects: a blue star and a green ring on the sand."]


def _outputs(enc):
    out = enc.encode_images(_images(), batch_size=2)
    return out["pooled"], out["tokens"], enc.encode_text(TEXTS)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin", ".pt"])
def test_local_weights_file_round_trip(tiny, tmp_path, suffix):
    want = _outputs(_encoder(tiny))
    f = tmp_path / f"weights{suffix}"
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(f))
    elif suffix == ".bin":
        torch.save(sd, f)
    else:  # an open_clip training checkpoint: {"epoch", "name", "state_dict": {"module.": ...}}
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, f)
    enc = mclip.ClipEncoder.load({"arch": TINY_VIT, "pretrained": str(f)})
    for a, b in zip(want, _outputs(enc)):
        np.testing.assert_array_equal(a, b)
    assert enc.config.weights == f.resolve()


def test_local_dir_round_trip(tiny, tmp_path):
    want = _outputs(_encoder(tiny))
    d = tmp_path / "clip"
    mclip.save_local_dir(tiny, d, train_clip.TINY_MODEL_CFG, info={"seed": 1})
    assert sorted(p.name for p in d.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    doc = json.loads((d / "open_clip_config.json").read_text())
    assert doc["model_cfg"] == train_clip.TINY_MODEL_CFG and doc["braindecode"] == {"seed": 1}
    for spec in ({"local_dir": str(d)}, {"arch": f"local-dir:{d}"}, str(d), f"local-dir:{d}", json.dumps({"local_dir": str(d)})):
        enc = mclip.ClipEncoder.load(spec)
        for a, b in zip(want, _outputs(enc)):
            np.testing.assert_array_equal(a, b)
    # 'sim' resolves to the folder the workflow trained
    assert mclip.parse_clip_config("sim", sim_dir=d).local_dir == d.resolve()


def test_missing_weights_name_the_file_and_where_to_get_it(tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(InputError) as e:
        mclip.parse_clip_config({"arch": "ViT-H-14", "pretrained": str(missing)})
    msg = str(e.value)
    assert str(missing) in msg and "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in msg and "models.clip.pretrained" in msg
    with pytest.raises(InputError, match="download tag"):  # a hub tag is never downloaded
        mclip.parse_clip_config({"arch": "ViT-H-14", "pretrained": "laion2b_s32b_b79k"})
    with pytest.raises(InputError, match="never downloaded"):
        mclip.parse_clip_config({"arch": "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K"})
    with pytest.raises(InputError, match=str(tmp_path / "nowhere")):
        mclip.parse_clip_config({"local_dir": str(tmp_path / "nowhere")})
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "open_clip_config.json").write_text(json.dumps({"model_cfg": RN_CFG}))
    with pytest.raises(InputError, match="open_clip_model.safetensors"):
        mclip.parse_clip_config({"local_dir": str(tmp_path / "half")})
    with pytest.raises(InputError, match="not an open_clip architecture"):
        mclip.parse_clip_config({"arch": "ViT-Q-99", "pretrained": str(missing)})
    with pytest.raises(InputError, match="unknown key"):
        mclip.parse_clip_config({"arch": "ViT-H-14", "weights": "x"})


class _Boom:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_checkpoints_are_refused(tiny, tmp_path):
    sd = dict(tiny.state_dict())
    f = tmp_path / "evil.bin"
    torch.save({"state_dict": sd, "hook": _Boom()}, f)
    with pytest.raises(InputError, match="weights_only"):
        mclip.read_state_dict(f)
    g = tmp_path / "legacy.pt"  # not even a torch zip: a raw pickle stream
    g.write_bytes(pickle.dumps({"x": _Boom()}))
    with pytest.raises(InputError, match=str(g)):
        mclip.ClipEncoder.load({"arch": TINY_VIT, "pretrained": str(g)})
    h = tmp_path / "notdict.bin"
    torch.save([torch.zeros(2)], h)
    with pytest.raises(InputError, match="state dict"):
        mclip.read_state_dict(h)


def test_weights_that_do_not_fit_are_an_input_error(tiny, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    sd.pop("logit_scale")
    f = tmp_path / "w.safetensors"
    save_file(sd, str(f))
    with pytest.raises(InputError, match="logit_scale"):
        mclip.load_clip({"arch": TINY_VIT, "pretrained": str(f)})


def test_encoder_shapes_and_normalisation(tiny):
    enc = _encoder(tiny)
    out = enc.encode_images(_images(7), batch_size=3)
    assert out["pooled"].shape == (7, 16) and out["pooled"].dtype == np.float32
    assert out["tokens"].shape == (7, 16, 32) == (7, *enc.token_shape)  # 32 px / 8 px patches, width 32
    np.testing.assert_allclose(np.linalg.norm(out["pooled"], axis=1), 1, rtol=1e-5)
    assert enc.embed_dim == 16
    t = enc.encode_text(TEXTS)
    assert t.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, rtol=1e-5)
    assert enc.encode_text([]).shape == (0, 16)
    only = enc.encode_images(_images(7), batch_size=7, what=("pooled",))
    assert list(only) == ["pooled"]
    np.testing.assert_allclose(only["pooled"], out["pooled"], atol=1e-6)


def test_preprocessing_is_open_clips_transform(tiny):
    """uint8 arrays and PIL images give what open_clip's own eval transform gives."""
    from PIL import Image

    enc = _encoder(tiny)
    imgs = _images(3, (61, 80))
    pil = [Image.fromarray(a) for a in imgs]
    x = torch.stack([enc.transform(p) for p in pil])
    with torch.no_grad():
        want = torch.nn.functional.normalize(tiny.encode_image(x), dim=-1).numpy()
    np.testing.assert_array_equal(enc.to_tensor(enc.preprocess_uint8(imgs)).numpy(), x.numpy())
    np.testing.assert_allclose(enc.encode_images(pil, what=("pooled",))["pooled"], want, atol=1e-6)


def test_resnet_tokens_from_forward_intermediates(tmp_path):
    torch.manual_seed(1)
    mclip.register_arch(TINY_RN, RN_CFG)
    model = mclip.create_clip_model(TINY_RN).eval()
    import open_clip
    from open_clip.model import get_model_preprocess_cfg

    enc = mclip.ClipEncoder(model, get_model_preprocess_cfg(model), open_clip.get_tokenizer(TINY_RN))
    out = enc.encode_images(_images(2))
    assert out["tokens"].shape == (2, 4, 8 * 32)  # (64 / 32)^2 positions, width * 32 channels
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image(enc.to_tensor(enc.preprocess_uint8(_images(2)))), dim=-1)
    np.testing.assert_allclose(out["pooled"], want.numpy(), atol=1e-6)
