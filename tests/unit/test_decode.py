"""Decode stage: retrieval rankings, reconstructions (PNG), blurry img2img, best-of-n, captions (TSV)."""

import h5py
import numpy as np
import pytest

from braindecode_pkg.cli import main
from braindecode_pkg.decode import DecodeSettings, decode, read_captions_tsv, read_images
from braindecode_pkg.errors import InputError

IDS = np.array([3, 17, 40, 41, 95, 230], np.int64)  # sorted test images
D = 128  # the shipped nsd-sim CLIP's width


pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def files(tmp_path):
    """An embed file of 9 images (the 6 test images among them) and an infer-layout brain file
    whose predictions are noisy versions of the true embeddings, shuffled in one place."""
    rng = np.random.default_rng(0)
    all_ids = np.array([1, 3, 17, 20, 40, 41, 95, 100, 230], np.int64)
    true = _unit(rng.normal(size=(len(all_ids), D)))
    embed = tmp_path / "clip.h5"
    with h5py.File(embed, "w") as f:
        f["nsd_id"] = all_ids
        f["image_pooled"] = true
        f["done"] = np.ones(len(all_ids), bool)
    rows = np.searchsorted(all_ids, IDS)
    pred = _unit(true[rows] + 0.1 * rng.normal(size=(len(IDS), D)))
    pred[[0, 1]] = pred[[1, 0]]  # predictions of test images 0 and 1 swapped: they retrieve each other
    brain = tmp_path / "pred.h5"
    with h5py.File(brain, "w") as f:
        f["nsd_id"] = IDS
        f["n_repeats"] = np.full(len(IDS), 3)
        f.create_group("avg_betas")["pooled"] = pred
        f.attrs["subject"] = "subj05"
        f.attrs["method"] = "adapt-k1"
    return {"embed": embed, "brain": brain, "pred": pred, "true": true[rows], "tmp": tmp_path}


FAST = {"num_inference_steps": 2, "guidance_scale": 1.0}


def test_decode_writes_rankings_images_and_captions(files):
    out = files["tmp"] / "dec" / "subj05"
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, top_k=3))
    with h5py.File(out / "decode.h5") as f:
        assert f["nsd_id"][:].tolist() == IDS.tolist()
        ret = f["retrieved"][:]
        assert f.attrs["method"] == "adapt-k1" and f.attrs["subject"] == "subj05"
        assert np.isnan(f["sample_similarity"][:]).all() and (f["best_of_n"][:] == 0).all()
    assert ret.shape == (6, 3)
    # candidates are the 6 test images only (never the 3 other embedded images); the swap shows
    assert set(ret.ravel()) <= set(IDS.tolist())
    assert ret[:, 0].tolist() == [17, 3, 40, 41, 95, 230]
    imgs = read_images(out / "images", IDS)
    assert imgs.shape == (6, 32, 32, 3) and imgs.dtype == np.uint8 and imgs.std() > 0
    assert not (out / "blurry").exists()
    caps = read_captions_tsv(out / "captions.tsv")
    assert sorted(caps) == IDS.tolist() and all(isinstance(c, str) and c for c in caps.values())
    # no temporary folder is left beside the output
    assert sorted(p.name for p in out.parent.iterdir()) == ["subj05"]


def test_predictions_are_decoded_at_the_norm_of_clip_embeddings(files):
    """A contrastive model's outputs have arbitrary norms: decoded after rescaling to CLIP's norm."""
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["pooled"][...] = files["pred"] * 25.0
    a, b, c = (files["tmp"] / k for k in "abc")
    decode(files["brain"], a, embed=files["embed"], settings=DecodeSettings(**FAST))
    decode(files["brain"], b, embed=files["embed"], settings=DecodeSettings(**FAST, match_norm=False))
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["pooled"][...] = files["pred"]
    decode(files["brain"], c, embed=files["embed"], settings=DecodeSettings(**FAST, match_norm=False))
    np.testing.assert_array_equal(read_images(a / "images", IDS), read_images(c / "images", IDS))
    assert (read_images(b / "images", IDS) != read_images(c / "images", IDS)).any()
    assert read_captions_tsv(a / "captions.tsv") == read_captions_tsv(c / "captions.tsv")
    with h5py.File(a / "decode.h5") as f:
        assert f.attrs["decoded_norm"] == pytest.approx(1.0, abs=1e-6)  # the embed file's unit vectors


def test_blurry_latents_start_img2img(files):
    """With a latent head the VAE decodes a blurry image; at strength 0 img2img returns it unchanged."""
    rng = np.random.default_rng(1)
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["latent"] = rng.normal(size=(len(IDS), 4, 16, 16)).astype(np.float32)
    out = files["tmp"] / "dec_blur"
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, strength=0.0))
    blurry = read_images(out / "blurry", IDS)
    assert blurry.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(read_images(out / "images", IDS), blurry)
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, strength=0.6))
    assert (read_images(out / "images", IDS) != blurry).any()


def test_best_of_n_keeps_the_sample_nearest_the_prediction(files):
    one = files["tmp"] / "n1"
    two = files["tmp"] / "n2"
    decode(files["brain"], one, embed=files["embed"], settings=DecodeSettings(**FAST))
    decode(files["brain"], two, embed=files["embed"], settings=DecodeSettings(**FAST, n_samples=2))
    with h5py.File(two / "decode.h5") as f:
        sim, best = f["sample_similarity"][:], f["best_of_n"][:]
    assert sim.shape == (6, 2) and np.isfinite(sim).all() and (np.abs(sim) <= 1 + 1e-5).all()
    np.testing.assert_array_equal(best, np.argmax(sim, axis=1))
    other = files["tmp"] / "n1s"  # sample 1 is the n = 1 image of the second seed
    decode(files["brain"], other, embed=files["embed"], settings=DecodeSettings(**FAST, seed=7919))
    a, c, b = (read_images(d / "images", IDS) for d in (one, other, two))
    assert (a != c).any()
    for i in range(len(IDS)):
        np.testing.assert_array_equal(b[i], (a, c)[best[i]][i])


def test_width_mismatch_and_missing_pooled_are_clear_errors(files):
    with h5py.File(files["brain"], "a") as f:
        del f["avg_betas"]["pooled"]
        f["avg_betas"]["tokens"] = np.zeros((len(IDS), 4, 8), np.float32)
    with pytest.raises(InputError, match="no pooled prediction"):
        decode(files["brain"], files["tmp"] / "x", embed=files["embed"])
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["pooled"] = np.ones((len(IDS), 64), np.float32)
    with h5py.File(files["embed"], "a") as f:
        del f["image_pooled"]
        f["image_pooled"] = np.ones((9, 64), np.float32)
    with pytest.raises(InputError, match="64-d but the image decoder reads 128-d"):
        decode(files["brain"], files["tmp"] / "x", embed=files["embed"])
    assert not (files["tmp"] / "x").exists()
    with pytest.raises(InputError, match="no protocol 'avg_outputs'"):
        decode(files["brain"], files["tmp"] / "x", embed=files["embed"], settings=DecodeSettings(protocol="avg_outputs"))


def test_cli_decode_and_true_embedding(files, tmp_path, mini_nsd, capsys):
    """`infer --true-embedding` writes the infer layout with the embed file's own vectors."""
    from braindecode_pkg.preprocess import preprocess

    prep = tmp_path / "prep.h5"
    preprocess(mini_nsd["root"], 1, prep, hash_cache=None, progress=False)
    with h5py.File(prep) as f:
        test_ids = np.unique(f["nsd_id"][:][f["is_test"][:]])
    rng = np.random.default_rng(2)
    emb = tmp_path / "e.h5"
    with h5py.File(emb, "w") as f:
        f["nsd_id"] = np.arange(0, int(test_ids.max()) + 1, dtype=np.int64)
        f["image_pooled"] = _unit(rng.normal(size=(int(test_ids.max()) + 1, D)))
    out = tmp_path / "true.h5"
    assert main(["infer", "--true-embedding", str(emb), "--prep", str(prep), "--out", str(out)]) == 0
    with h5py.File(out) as f, h5py.File(emb) as e:
        assert f["nsd_id"][:].tolist() == test_ids.tolist()
        np.testing.assert_array_equal(f["avg_betas/pooled"][:], e["image_pooled"][:][test_ids])
        np.testing.assert_array_equal(f["avg_outputs/pooled"][:], e["image_pooled"][:][test_ids])
        assert f.attrs["method"] == "true_embedding"
    dec, dec2 = tmp_path / "d", tmp_path / "d2"
    assert main(["decode", "--brain", str(out), str(out), "--embed", str(emb), "--set", "num_inference_steps=2",
                 "--set", "guidance_scale=1", "--out", str(dec), str(dec2), "--quiet"]) == 0
    with h5py.File(dec / "decode.h5") as f:  # true embeddings retrieve themselves
        assert f["retrieved"][:, 0].tolist() == test_ids.tolist()
    # two files decoded by one process (models loaded once): each as if decoded alone
    np.testing.assert_array_equal(read_images(dec / "images", test_ids), read_images(dec2 / "images", test_ids))
    assert main(["decode", "--brain", str(out), "--embed", str(emb), "--set", "bogus=1", "--out", str(dec)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["decode", "--brain", str(out), str(out), "--embed", str(emb), "--out", str(dec)]) == 2
    assert "2 --brain files for 1 --out" in capsys.readouterr().err
    assert main(["infer", "--prep", str(prep), "--out", str(out)]) == 2
