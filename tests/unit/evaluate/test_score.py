"""Scorer.score end to end on tiny files: the judge CLIP (not the decoding CLIP) scores two-way
CLIP and CLIP-S, the decoded infer protocol is the one scored, retrieval on tokens, the image
chain, and what the part's info records.

Two tiny open_clip ViTs of different seeds (tests/realpath/weights.py) stand for the decoding CLIP
(whose embeddings fill the embed file) and the judge. 7 test images of 36 px; reconstructions of
30 px, the first 6 reconstructed. Caption metrics are stubbed (their own tests run Java).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

pytest.importorskip("open_clip")

from braindecode_pkg.decode import DecodeSettings, recipe_attrs  # noqa: E402
from braindecode_pkg.errors import InputError  # noqa: E402
from braindecode_pkg.evaluate import captions as cm  # noqa: E402
from braindecode_pkg.evaluate import images as im  # noqa: E402
from braindecode_pkg.evaluate import score as sc  # noqa: E402
from braindecode_pkg.evaluate.retrieval import retrieval  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = np.array([5, 8, 13, 21, 34, 55, 89], np.int64)
ALL_IDS = np.array([1, 5, 8, 13, 21, 30, 34, 55, 89], np.int64)
M = 6  # reconstructed
TOK = (4, 5)  # tokens per image: 4 x 5


def _unit(x):
    return (x / np.linalg.norm(x.reshape(len(x), -1), axis=1).reshape(-1, *[1] * (x.ndim - 1))).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tests.realpath import weights as W

    d = tmp_path_factory.mktemp("clips")
    return {"decoder": W.write_open_clip_local_dir(d / "decoder", seed=0, formats=("safetensors",)),
            "judge": W.write_open_clip_local_dir(d / "judge", seed=7, formats=("safetensors",))}


@pytest.fixture(autouse=True)
def no_java(monkeypatch):
    """COCO's tokeniser and scorers (Java) stubbed: this file tests what is scored, not BLEU."""
    monkeypatch.setattr(cm, "tokenize", lambda caps: [str(c).lower() for c in caps])
    monkeypatch.setattr(cm, "tokenize_refs", lambda refs: [[str(r).lower() for r in rs] for rs in refs])
    monkeypatch.setattr(cm, "coco_metrics", lambda preds, refs, **kw: {"bleu1": (0.5, np.full(len(preds), 0.5))})


def _write_png(path, a):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


@pytest.fixture
def files(tmp_path, clips):
    """NSD stimuli, an embed file (the decoding CLIP's embeddings, float16 tokens), an infer-layout
    brain file whose two protocols differ, and a decode folder that decoded ``avg_outputs``."""
    from braindecode_pkg.data.layout import NSDPaths
    from braindecode_pkg.decoders.clip import ClipEncoder
    from braindecode_pkg.io import sha256_file

    rng = np.random.default_rng(0)
    root = tmp_path / "nsd"
    brick = np.zeros((100, 36, 36, 3), np.uint8)
    brick[ALL_IDS] = rng.integers(0, 256, (len(ALL_IDS), 36, 36, 3), dtype=np.uint8)
    stim = NSDPaths(root).stimuli
    stim.parent.mkdir(parents=True)
    with h5py.File(stim, "w") as f:
        f["imgBrick"] = brick
    dec = ClipEncoder.load({"local_dir": str(clips["decoder"])})
    pooled = dec.encode_images(brick[ALL_IDS], what=("pooled",))["pooled"]
    tokens = rng.normal(size=(len(ALL_IDS), *TOK)).astype(np.float16)
    embed = tmp_path / "clip.h5"
    with h5py.File(embed, "w") as f:
        f["nsd_id"] = ALL_IDS
        f["image_pooled"] = pooled
        f["image_tokens"] = tokens
        f["captions"] = np.array([[f"an image {i}".encode(), b"another caption"] for i in ALL_IDS])
        f["n_captions"] = np.full(len(ALL_IDS), 2)
        f["done"] = np.ones(len(ALL_IDS), bool)
        f.attrs["model"] = "decoder"
        f.attrs["weights_sha256"] = sha256_file(clips["decoder"] / "open_clip_model.safetensors")
    rows = np.searchsorted(ALL_IDS, IDS)
    true, true_tok = pooled[rows], tokens[rows].astype(np.float32)
    perm = np.r_[1, 0, 3, 2, 4, 6, 5]  # swapped pairs: avg_outputs retrieves some wrong images
    brain = tmp_path / "brain.h5"
    with h5py.File(brain, "w") as f:
        f["nsd_id"] = IDS
        f["n_repeats"] = np.full(len(IDS), 3)
        g = f.create_group("avg_betas")
        g["pooled"] = _unit(true + 0.05 * rng.normal(size=true.shape))
        g["tokens"] = true_tok[perm] + 0.01 * rng.normal(size=true_tok.shape).astype(np.float32)
        g = f.create_group("avg_outputs")
        g["pooled"] = _unit(true[perm] + 0.05 * rng.normal(size=true.shape))
        g["tokens"] = true_tok + 0.01 * rng.normal(size=true_tok.shape).astype(np.float32)
        f.attrs["subject"], f.attrs["method"] = "subj02", "adapt-k1"
    d = tmp_path / "decode"
    # each reconstruction: a noisy crop of its stimulus
    noise = rng.normal(0, 60, (M, 30, 30, 3))
    recon = np.clip(brick[IDS[:M], 3:33, 3:33].astype(float) + noise, 0, 255).astype(np.uint8)
    for i, a in zip(IDS[:M], recon):
        _write_png(d / "images" / f"{i:05d}.png", a)
    (d / "captions.tsv").write_text("nsd_id\tcaption\n" + "".join(f"{i}\ta picture number {i}\n" for i in IDS))
    with h5py.File(d / "decode.h5", "w") as f:
        f["nsd_id"] = IDS
        f.attrs["protocol"] = "avg_outputs"
        f.attrs["n_reconstructed"] = M
        f.attrs.update(recipe_attrs(DecodeSettings(n_samples=3, img2img=True, strength=0.6), "prior", True))
    return {"root": root, "embed": embed, "brain": brain, "decode": d, "stimuli": brick[IDS], "recon": recon,
            "true_tok": true_tok, "clips": clips}


def _scorer(files, **kw):
    s = sc.Scorer(embed=files["embed"], nsd_root=files["root"], n_candidates=300, n_draws=2, **kw)
    s._meteor = object()  # never started: coco_metrics is stubbed
    return s


def test_the_judge_not_the_decoding_clip_scores_twoway_and_clip_s(files):
    from braindecode_pkg.decoders.clip import ClipEncoder

    judge_dir, dec_dir = files["clips"]["judge"], files["clips"]["decoder"]
    with _scorer(files, judge_clip={"local_dir": str(judge_dir)}) as s:
        part = s.score(files["brain"], files["decode"])
    # by hand, under each CLIP: the two rank the reconstructions differently
    want = {}
    for name, d in (("judge", judge_dir), ("decoder", dec_dir)):
        enc = ClipEncoder.load({"local_dir": str(d)})
        f_true = im.clip_features(enc, files["stimuli"], size=sc.IMAGE_SIZE)
        tw = im.two_way(im.clip_features(enc, files["recon"], size=sc.IMAGE_SIZE), f_true[:M])
        caps = [f"a picture number {i}" for i in IDS]
        want[name] = (tw, cm.clip_s(enc.encode_text(caps), f_true))
    assert not np.allclose(want["judge"][0], want["decoder"][0])
    items = part.metrics["twoway_clip"]["items"]
    np.testing.assert_allclose(items[:M], want["judge"][0], atol=1e-12)
    assert np.isnan(items[M:]).all()
    assert part.metrics["twoway_clip"]["value"] != pytest.approx(want["decoder"][0].mean())
    np.testing.assert_allclose(part.metrics["clip_s"]["items"], want["judge"][1], rtol=1e-6)
    assert not np.allclose(want["judge"][1], want["decoder"][1])
    j = part.info["judge_clip"]
    assert j["weights"] == str((judge_dir / "open_clip_model.safetensors").resolve())
    assert j["is_decoding_clip"] is False and j["sim"] is False and j["family"] == "judge"
    assert part.info["decoding_clip"]["model"] == "decoder"
    # the decoding CLIP as the judge: recorded as such (and then it scores what it selected)
    with _scorer(files, judge_clip={"local_dir": str(dec_dir)}) as s:
        part = s.score(files["brain"], files["decode"])
    assert part.info["judge_clip"]["is_decoding_clip"] is True
    np.testing.assert_allclose(part.metrics["twoway_clip"]["items"][:M], want["decoder"][0], atol=1e-12)


def test_the_decoded_protocol_is_scored(files):
    judge = {"local_dir": str(files["clips"]["judge"])}
    with h5py.File(files["embed"]) as f:
        true = f["image_pooled"][:][np.searchsorted(ALL_IDS, IDS)]
    with h5py.File(files["brain"]) as f:
        by = {p: f[p]["pooled"][:] for p in ("avg_betas", "avg_outputs")}
    want = {p: retrieval(b, true, n_draws=2) for p, b in by.items()}
    assert want["avg_betas"]["brain_to_image"] == 1.0 > want["avg_outputs"]["brain_to_image"]
    with _scorer(files, judge_clip=judge) as s:
        part = s.score(files["brain"], files["decode"])  # decode.h5 says avg_outputs
        assert part.info["protocol"] == "avg_outputs"
        for d, k in (("brain_to_image", "retrieval_brain2image_top1"), ("image_to_brain", "retrieval_image2brain_top1")):
            assert part.metrics[k]["value"] == pytest.approx(want["avg_outputs"][d])
        assert part.info["retrieval"]["head"] == "pooled" and part.info["retrieval"]["width"] == 24
        with h5py.File(files["decode"] / "decode.h5", "a") as f:
            f.attrs["protocol"] = "avg_betas"
        part = s.score(files["brain"], files["decode"])
        assert part.info["protocol"] == "avg_betas" and part.metrics["retrieval_brain2image_top1"]["value"] == 1.0
        with h5py.File(files["decode"] / "decode.h5", "a") as f:
            del f.attrs["protocol"]
        with pytest.raises(InputError, match="decode.h5: no protocol attribute"):
            s.score(files["brain"], files["decode"])


def test_retrieval_on_tokens_flattened_in_float32(files):
    judge = {"local_dir": str(files["clips"]["judge"])}
    with h5py.File(files["brain"]) as f:
        brain = f["avg_outputs"]["tokens"][:]
    a = brain.reshape(len(brain), -1).astype(np.float64)
    b = files["true_tok"].reshape(len(brain), -1).astype(np.float64)
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    want = retrieval(None, None, similarity=cos, n_draws=2)
    assert want["brain_to_image"] == 1.0  # avg_outputs' tokens are right where its pooled is not
    with _scorer(files, judge_clip=judge, retrieval_head="tokens") as s:
        part = s.score(files["brain"], files["decode"])
        assert part.metrics["retrieval_brain2image_top1"]["value"] == want["brain_to_image"]
        assert part.metrics["retrieval_image2brain_top1"]["value"] == want["image_to_brain"]
        assert part.info["retrieval"] == {"n_candidates": 7, "n_draws": 2, "n": 7, "head": "tokens", "width": 20}
        pooled = s.score(files["brain"], files["decode"], retrieval_head="pooled")
        assert pooled.metrics["retrieval_brain2image_top1"]["value"] < 1.0
        with h5py.File(files["brain"], "a") as f:
            del f["avg_outputs"]["tokens"]
        with pytest.raises(InputError, match="no tokens head under protocol 'avg_outputs'"):
            s.score(files["brain"], files["decode"])
    assert sc.unit_rows(np.ones((3, 2, 2), np.float16)).dtype == np.float32


def test_image_chain_reaches_every_resize_and_the_info(files):
    judge = {"local_dir": str(files["clips"]["judge"])}
    with _scorer(files, judge_clip=judge, image_protocol={"base": 256, "antialias": False}) as s:
        part = s.score(files["brain"], files["decode"])
    recon, stim = files["recon"], files["stimuli"][:M]
    mind = im.ssim(recon, stim, size=425, base=256, antialias=False)
    np.testing.assert_allclose(part.metrics["ssim"]["items"][:M], mind, atol=1e-12)
    np.testing.assert_allclose(part.metrics["pixcorr"]["items"][:M],
                               im.pixcorr(recon, stim, size=425, base=256, antialias=False), atol=1e-12)
    assert not np.allclose(mind, im.ssim(recon, stim, size=425))
    assert part.info["image_protocol"] == {"base": 256, "antialias": False, "name": "MindEye"}
    assert part.info["n_reconstructed"] == M and part.info["n"] == len(IDS)
    assert part.info["decode_recipe"] == {"decoded": "prior", "img2img": True, "strength": 0.6, "n_samples": 3,
                                          "select_by": "direction", "num_inference_steps": None,
                                          "guidance_scale": None}
    with pytest.raises(InputError, match="unknown key"):
        im.ImageProtocol.parse({"base": 256, "antialais": False})


def test_part_info_round_trips_and_decode_mismatch_is_an_error(files, tmp_path):
    judge = {"local_dir": str(files["clips"]["judge"])}
    with _scorer(files, judge_clip=judge) as s:
        part = s.score(files["brain"], files["decode"])
        back = sc.read_part(sc.write_part(part, tmp_path / "p.h5"))
        assert back.info["judge_clip"]["weights_sha256"] == part.info["judge_clip"]["weights_sha256"]
        assert back.info["protocol"] == "avg_outputs" and back.info["image_protocol"]["name"] == "default"
        with h5py.File(files["decode"] / "decode.h5", "a") as f:
            f["nsd_id"][0] = 4
        with pytest.raises(InputError, match="not the brain file's"):
            s.score(files["brain"], files["decode"])


def test_missing_shipped_sim_judge_names_the_folder_and_how_to_make_it(tmp_path, monkeypatch, clips):
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.evaluate.judge import parse_judge_config
    from braindecode_pkg.sim.shipped import SHIPPED_DIR

    assert mclip.SHIPPED_SIM_JUDGE == SHIPPED_DIR / "judge_clip"
    monkeypatch.setattr(mclip, "SHIPPED_SIM_JUDGE", tmp_path / "nowhere" / "judge_clip")
    with pytest.raises(InputError) as e:
        sc.Scorer(embed=tmp_path / "e.h5", nsd_root=tmp_path, judge_clip="sim")
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "nowhere" / "judge_clip")) and \
        "braindecode-pkg train-sim-models --only judge_clip" in msg
    # a trained folder given explicitly, or a shipped one, is what "sim" reads
    assert parse_judge_config("sim", sim_dir=clips["judge"]).local_dir == clips["judge"].resolve()
    monkeypatch.setattr(mclip, "SHIPPED_SIM_JUDGE", clips["judge"])
    assert parse_judge_config("sim").local_dir == clips["judge"]


def test_cli_passes_the_judge_chain_and_heads(files, tmp_path, monkeypatch, capsys):
    import json

    from braindecode_pkg.cli import main

    monkeypatch.setattr(sc.Scorer, "meteor", property(lambda self: object()))
    judge = json.dumps({"local_dir": str(files["clips"]["judge"])})
    args = ["evaluate", "--brain", str(files["brain"]), "--decode", str(files["decode"]), "--embed",
            str(files["embed"]), "--nsd-root", str(files["root"]), "--judge-clip", judge,
            "--image-protocol", '{"base": 256, "antialias": false}', "--retrieval-head", "tokens",
            "--out", str(tmp_path / "part.h5")]
    assert main(args) == 0
    info = sc.read_part(tmp_path / "part.h5").info
    assert info["retrieval"]["head"] == "tokens" and info["image_protocol"]["name"] == "MindEye"
    assert info["judge_clip"]["family"] == "judge" and info["protocol"] == "avg_outputs"
    assert main(args[:-3] + ["tokens", "pooled", "--out", str(tmp_path / "p2.h5")]) == 2
    assert "2 --retrieval-head" in capsys.readouterr().err
    i = args.index("--judge-clip")  # the judge is named, never nsd-sim's by default
    assert main(args[:i] + args[i + 2:]) == 2
    assert "evaluate needs --judge-clip" in capsys.readouterr().err


def test_sim_in_any_form_is_the_judge_never_the_decoding_clip(tmp_path, monkeypatch, clips):
    from braindecode_pkg.decoders import clip as mclip
    from braindecode_pkg.evaluate.judge import is_sim, parse_judge_config

    monkeypatch.setattr(mclip, "SHIPPED_SIM_JUDGE", tmp_path / "absent")
    for spec in ("sim", '{"local_dir": "sim"}', {"arch": "sim"}):
        assert is_sim(spec)
        with pytest.raises(InputError, match="nsd-sim's judge CLIP not found"):
            parse_judge_config(spec)
        assert parse_judge_config(spec, sim_dir=clips["judge"]).local_dir == clips["judge"].resolve()
    assert not is_sim({"local_dir": str(clips["judge"])})
