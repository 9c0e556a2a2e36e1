"""Decode stage: retrieval rankings, reconstructions (PNG), blurry img2img, best-of-n, captions (TSV)."""

import h5py
import numpy as np
import pytest

from braindecode_pkg.cli import main
from braindecode_pkg.decode import DecodeSettings, decode, read_captions_tsv, read_images, read_recipe, recipe_text
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


def test_max_images_reconstructs_the_first_test_images_and_captions_all(files):
    out = files["tmp"] / "few"
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, max_images=4, n_samples=2))
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}.png" for i in IDS[:4]]
    assert sorted(read_captions_tsv(out / "captions.tsv")) == IDS.tolist()
    with h5py.File(out / "decode.h5") as f:
        assert f.attrs["n_reconstructed"] == 4 and f["best_of_n"].shape == (4,)
        assert f["sample_similarity"].shape == (4, 2) and f["retrieved"].shape == (6, 5)
    with pytest.raises(InputError, match="max_images must be >= 1"):
        DecodeSettings(max_images=0)


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
    ia, ib, ic = (read_images(x / "images", IDS).astype(int) for x in (a, b, c))
    # the rescaled predictions equal the unit ones up to float rounding, which the sampler may
    # carry into a pixel level here and there (one of 18,432 values on one machine)
    assert np.abs(ia - ic).max() <= 1 and (ia != ic).mean() < 1e-3
    assert np.abs(ib - ic).mean() > 10  # decoded at norm 25 instead: other images
    assert read_captions_tsv(a / "captions.tsv") == read_captions_tsv(c / "captions.tsv")
    with h5py.File(a / "decode.h5") as f:
        assert f.attrs["decoded_norm"] == pytest.approx(1.0, abs=1e-6)  # the embed file's unit vectors


def test_blurry_latents_start_img2img(files):
    """With a latent head the VAE decodes a blurry image; at strength 0 img2img returns it unchanged."""
    rng = np.random.default_rng(1)
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["latent"] = rng.normal(size=(len(IDS), 4, 16, 16)).astype(np.float32)
    out = files["tmp"] / "dec_blur"
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, img2img=True, strength=0.0))
    blurry = read_images(out / "blurry", IDS)
    assert blurry.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(read_images(out / "images", IDS), blurry)
    decode(files["brain"], out, embed=files["embed"], settings=DecodeSettings(**FAST, img2img=True, strength=0.6))
    started = read_images(out / "images", IDS)
    assert (started != blurry).any()
    with h5py.File(out / "decode.h5") as f:
        assert f.attrs["img2img"] and f.attrs["decoded"] == "pooled"
    assert recipe_text(read_recipe(out)).startswith("pooled embedding; img2img from the blurry image at strength 0.6;")
    # without img2img the blurry image is still written, and the reconstruction starts from noise
    plain = files["tmp"] / "dec_plain"
    decode(files["brain"], plain, embed=files["embed"], settings=DecodeSettings(**FAST, strength=0.6))
    np.testing.assert_array_equal(read_images(plain / "blurry", IDS), blurry)
    assert (read_images(plain / "images", IDS) != started).any()
    with h5py.File(plain / "decode.h5") as f:
        assert not f.attrs["img2img"]
    assert read_recipe(plain)["strength"] is None  # set, but not used without img2img


def test_best_of_n_keeps_the_sample_nearest_the_prediction(files):
    """n = 2: sample 0 is the n = 1 image of seed 0 and sample 1 that of seed 7919; each is scored
    here by the shipped CLIP's cosine to the prediction, and the kept image is the nearer one."""
    from braindecode_pkg.decoders.clip import ClipEncoder

    one = files["tmp"] / "n1"
    two = files["tmp"] / "n2"
    other = files["tmp"] / "n1s"
    decode(files["brain"], one, embed=files["embed"], settings=DecodeSettings(**FAST))
    decode(files["brain"], two, embed=files["embed"], settings=DecodeSettings(**FAST, n_samples=2))
    decode(files["brain"], other, embed=files["embed"], settings=DecodeSettings(**FAST, seed=7919))
    with h5py.File(two / "decode.h5") as f:
        sim, best = f["sample_similarity"][:], f["best_of_n"][:]
    a, c, b = (read_images(d / "images", IDS) for d in (one, other, two))
    assert (a != c).any()
    enc = ClipEncoder.load("sim")
    emb = np.stack([_unit(enc.encode_images(x, what=("pooled",))["pooled"]) for x in (a, c)], 1)
    want = np.einsum("njd,nd->nj", emb, files["pred"])  # cosine to the prediction's direction
    np.testing.assert_allclose(sim, want, atol=1e-5)
    nearer = np.argmax(want, axis=1)
    assert (np.abs(want[:, 0] - want[:, 1]) > 1e-3).all() and set(nearer.tolist()) == {0, 1}  # both kept somewhere
    np.testing.assert_array_equal(best, nearer)
    for i in range(len(IDS)):
        np.testing.assert_array_equal(b[i], (a, c)[nearer[i]][i])
    # select_by "source": the same samples (decoded from the prior's vectors) compared with those
    # vectors instead of the pooled direction
    prior = _unit(np.random.default_rng(8).normal(size=(len(IDS), files["pred"].shape[1])))
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["prior"] = prior
    by = {}
    for sel in ("direction", "source"):
        by[sel] = files["tmp"] / f"n2-{sel}"
        decode(files["brain"], by[sel], embed=files["embed"],
               settings=DecodeSettings(**FAST, source="prior", n_samples=2, select_by=sel))
    p0, p1 = (files["tmp"] / f"p1-{k}" for k in (0, 7919))
    for d, seed in ((p0, 0), (p1, 7919)):
        decode(files["brain"], d, embed=files["embed"], settings=DecodeSettings(**FAST, source="prior", seed=seed))
    emb = np.stack([_unit(enc.encode_images(read_images(d / "images", IDS), what=("pooled",))["pooled"])
                    for d in (p0, p1)], 1)
    for sel, against in (("direction", files["pred"]), ("source", prior)):
        with h5py.File(by[sel] / "decode.h5") as f:
            np.testing.assert_allclose(f["sample_similarity"][:], np.einsum("njd,nd->nj", emb, against), atol=1e-5)
    assert read_recipe(by["source"])["select_by"] == "source"
    with pytest.raises(InputError, match="select_by 'clip'"):
        DecodeSettings(select_by="clip")


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
    sims = ["--image-decoder", "sim", "--captioner", "sim", "--clip", "sim"]
    assert main(["decode", "--brain", str(out), str(out), "--embed", str(emb), *sims, "--set", "num_inference_steps=2",
                 "--set", "guidance_scale=1", "--out", str(dec), str(dec2), "--quiet"]) == 0
    with h5py.File(dec / "decode.h5") as f:  # true embeddings retrieve themselves
        assert f["retrieved"][:, 0].tolist() == test_ids.tolist()
    # two files decoded by one process (models loaded once): each as if decoded alone
    np.testing.assert_array_equal(read_images(dec / "images", test_ids), read_images(dec2 / "images", test_ids))
    assert main(["decode", "--brain", str(out), "--embed", str(emb), *sims, "--set", "bogus=1", "--out", str(dec)]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["decode", "--brain", str(out), str(out), "--embed", str(emb), *sims, "--out", str(dec)]) == 2
    assert "2 --brain files for 1 --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the models are named, never nsd-sim's by default
        main(["decode", "--brain", str(out), "--embed", str(emb), "--out", str(dec)])
    assert "the following arguments are required: --image-decoder, --captioner, --clip" in capsys.readouterr().err
    assert main(["infer", "--prep", str(prep), "--out", str(out)]) == 2


def _stimuli(root, ids):
    from braindecode_pkg.evaluate.score import _stimuli as read

    return read(root, ids)


def test_vae_latents_round_trip_and_latents_stage(tmp_path):
    """encode_latents → decode_latents gives the stimulus back at the decoder's size (the blurry
    image's source); the latents stage writes one latent per shown image, keyed by nsd_id."""
    from braindecode_pkg.sim import scenes as sc
    from braindecode_pkg.embed.stimuli import shown_images
    from braindecode_pkg.data.layout import NSDPaths
    from braindecode_pkg.embed.latents import embed_latents
    from braindecode_pkg.decoders.image_decoder import ImageDecoder, resize_uint8

    dec = ImageDecoder.load("sim")
    attrs = sc.sample_scenes(np.random.default_rng(4), 6)
    imgs = np.stack([np.asarray(sc.render_scene(attrs, i, pil=True).convert("RGB")) for i in range(6)])
    lat = dec.encode_latents(imgs)
    assert lat.shape == (6, 4, 16, 16) and lat.dtype == np.float32
    back = dec.decode_latents(lat).astype(float)
    small = resize_uint8(imgs, 32).astype(float)
    err = np.abs(back - small).mean(axis=(1, 2, 3))
    other = np.abs(back - np.roll(small, 1, axis=0)).mean(axis=(1, 2, 3))
    assert (err < other).all() and err.max() < 15, (err, other)  # grey levels of 255
    from braindecode_pkg.sim import world as sim

    sim.simulate(sim.sim_config("tiny", subjects=(1,), sessions=1), tmp_path / "sim")
    root = tmp_path / "sim/nsd"
    out = embed_latents(root, [1], tmp_path / "latent.h5", decoder=dec)
    with h5py.File(out) as f:
        assert f["nsd_id"][:].tolist() == shown_images(NSDPaths(root), [1]).tolist()
        assert f["latent"].shape == (len(f["nsd_id"]), 4, 16, 16)
        np.testing.assert_allclose(f["latent"][:3], dec.encode_latents(_stimuli(root, f["nsd_id"][:3])), atol=1e-5)


def test_the_prior_source_decodes_the_prior_samples_images_and_captions(files):
    """source "prior" decodes the brain file's prior samples where it has them (the retrieval
    ranking stays on the pooled embedding); a file without them (ridge, true embeddings) is
    decoded from its pooled embedding, and the folder says which."""
    rng = np.random.default_rng(5)
    prior = _unit(rng.normal(size=(len(IDS), D)))
    with h5py.File(files["brain"], "a") as f:
        f["avg_betas"]["prior"] = prior
    direct, from_prior, forced = (files["tmp"] / n for n in ("direct", "prior", "forced"))
    decode(files["brain"], direct, embed=files["embed"], settings=DecodeSettings(**FAST))
    decode(files["brain"], from_prior, embed=files["embed"], settings=DecodeSettings(**FAST, source="prior"))
    with h5py.File(files["brain"], "a") as f:  # the pooled embedding replaced by the prior samples
        f["avg_betas"]["pooled"][...] = prior
        del f["avg_betas"]["prior"]
    decode(files["brain"], forced, embed=files["embed"], settings=DecodeSettings(**FAST, source="prior"))
    with h5py.File(from_prior / "decode.h5") as a, h5py.File(direct / "decode.h5") as b, \
            h5py.File(forced / "decode.h5") as c:
        assert a.attrs["decoded"] == "prior" and b.attrs["decoded"] == "pooled" == c.attrs["decoded"]
    # what made each folder, read back for evaluate and the report
    assert read_recipe(from_prior) == {"decoded": "prior", "img2img": False, "strength": None, "n_samples": 1,
                                       "select_by": None, "num_inference_steps": 2, "guidance_scale": 1.0}
    assert recipe_text(read_recipe(direct)) == "pooled embedding; one sample; steps 2, guidance 1"
    with h5py.File(direct / "decode.h5", "a") as f:
        del f.attrs["decoded"]
    with pytest.raises(InputError, match="decode.h5: no decoded attribute"):
        read_recipe(direct)
        np.testing.assert_array_equal(a["retrieved"][:], b["retrieved"][:])  # ranked on the pooled embedding
    # the images and captions of the prior samples are those of the same vectors decoded directly
    np.testing.assert_array_equal(read_images(from_prior / "images", IDS), read_images(forced / "images", IDS))
    assert read_captions_tsv(from_prior / "captions.tsv") == read_captions_tsv(forced / "captions.tsv")
    assert (read_images(from_prior / "images", IDS) != read_images(direct / "images", IDS)).any()
    with pytest.raises(InputError, match="source 'mean'"):
        DecodeSettings(source="mean")
