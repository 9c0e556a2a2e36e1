"""Decode feeds each image decoder the scale of the embeddings it was trained on (issue 20): Stable
unCLIP was trained on raw CLIP image embeddings (its ``image_normalizer`` holds their statistics),
nsd-sim's decoders on L2-normalised ones (recorded in their ``braindecode.json``)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from braindecode_pkg.decode import DecodeSettings, Decoders, decode
from braindecode_pkg.decoders.image_decoder import ImageDecoder
from braindecode_pkg.errors import InputError
from tests.realpath import weights as W

D = W.CLIP_EMBED_DIM


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return W.write_unclip_pipeline(tmp_path_factory.mktemp("sd") / "unclip", embed_dim=D, variants=(), with_bin=False)


def test_the_real_pipeline_is_fed_the_raw_clip_scale(pipeline_dir, tmp_path):
    from safetensors.numpy import load_file

    st = load_file(str(pipeline_dir / "image_normalizer" / "diffusion_pytorch_model.safetensors"))
    mean, std = st["mean"].astype(np.float64), st["std"].astype(np.float64)
    want = float(np.sqrt((mean ** 2).sum() + (std ** 2).sum()))  # RMS norm of what its statistics describe
    dec = ImageDecoder.load({"pipeline_dir": str(pipeline_dir)})
    assert dec.embed_scale == pytest.approx(want, rel=1e-6) and not 0.9 < want < 1.1
    assert ImageDecoder.load({"pipeline_dir": str(pipeline_dir), "embeds_norm": 3.0}).embed_scale == 3.0

    # a brain file of 3 test images whose predictions are directions of arbitrary norm
    rng = np.random.default_rng(0)
    ids = np.array([4, 9, 11])
    true = rng.normal(size=(3, D)).astype(np.float32)
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    embed = tmp_path / "clip.h5"
    with h5py.File(embed, "w") as f:
        f["nsd_id"] = ids
        f["image_pooled"] = true
    brain = tmp_path / "brain.h5"
    pred = true * np.array([[25.0], [0.3], [7.0]], np.float32)
    with h5py.File(brain, "w") as f:
        f["nsd_id"] = ids
        f.create_group("avg_betas")["pooled"] = pred
        f.attrs["method"], f.attrs["subject"] = "m", "subj01"
    models = Decoders.__new__(Decoders)  # the decoders without loading a captioner for this check
    models.image, models.device, models._clip = dec, "cpu", None

    class _NoCaptions:
        clip_dim = D

        def generate(self, x, **kw):
            return [""] * len(x)

        def describe(self):
            return {}

    models.caption = _NoCaptions()
    fed = []
    generate = dec.generate

    def spy(image_embeds, *a, **k):  # what decode hands the pipeline
        fed.append(np.array(image_embeds, copy=True))
        return generate(image_embeds, *a, **k)

    dec.generate = spy
    out = decode(brain, tmp_path / "dec", embed=embed, decoders=models,
                 settings=DecodeSettings(max_images=3, num_inference_steps=2, guidance_scale=1.0, batch_size=3))
    with h5py.File(out / "decode.h5") as f:
        assert f.attrs["decoded_norm"] == pytest.approx(want, rel=1e-6)
    (e,) = fed
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), want, rtol=1e-5)  # raw CLIP scale, not 1
    np.testing.assert_allclose(e / want, true, atol=1e-5)  # the predictions' directions


def test_nsd_sim_decoders_record_unit_norm():
    dec = ImageDecoder.load("sim")
    assert dec.info["embeds_norm"] == 1.0 and dec.embed_scale == 1.0


def test_untrained_normaliser_statistics_are_refused(tmp_path):
    d = W.write_unclip_pipeline(tmp_path / "u", embed_dim=D, variants=(), with_bin=False, normalizer_stats=False)
    with pytest.raises(InputError, match="untrained defaults"):
        ImageDecoder.load({"pipeline_dir": str(d)}).embed_scale
