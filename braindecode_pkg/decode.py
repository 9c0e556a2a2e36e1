"""Decode: brain-predicted CLIP embeddings → retrieved images, reconstructions and captions.

Reads one test-set embeddings file of the infer stage (``results/brain/{method}/subjAA.h5``,
one protocol of it, default ``avg_betas``) and writes one folder per (method, subject):

=========================  ==========================================================================
``decode.h5``              ``nsd_id`` (n,) int64 sorted test images; ``retrieved`` (n, k) int64: the
                           nsd ids of the k test images whose true CLIP embedding is most similar
                           (cosine) to the prediction, best first; ``best_of_n`` (n,) int64: the
                           sample kept; ``sample_similarity`` (n, n_samples) float32: cosine
                           similarity of each sample's CLIP embedding to what it is selected by
                           (``select_by``; NaN when n_samples = 1: no CLIP pass is needed);
                           these two for the first ``n_reconstructed`` (attribute) ids, those
                           with images (``max_images``). Attributes: ``method``, ``subject``,
                           ``protocol``, ``brain`` (input file), ``models`` (JSON),
                           ``decoded_norm`` (see Scale; NaN if not rescaled), and the recipe:
                           ``settings`` (JSON), ``decoded``, ``img2img`` (:func:`read_recipe`)
``images/{nsd_id:05d}.png``  the reconstruction (the best of n samples) of each of the first
                           ``max_images`` test images (all by default)
``blurry/{nsd_id:05d}.png``  the low-level reconstruction: the image decoder's VAE decoding of the
                           predicted latent, when the brain file has a ``latent`` head; the
                           reconstructions are then img2img from it (``strength``)
``captions.tsv``           ``nsd_id``, ``caption``: the caption decoder's caption of the prediction
=========================  ==========================================================================

Scale: a contrastive brain model predicts a direction in CLIP space, not a norm (its outputs'
norms are arbitrary, e.g. ~25 where CLIP's are 1). With ``match_norm`` (default) every
prediction is rescaled to the norm of the embeddings the image decoder was trained on
(:attr:`~braindecode_pkg.decoders.image_decoder.ImageDecoder.embed_scale`: 1 for nsd-sim's,
which read L2-normalised embeddings; the raw CLIP scale its ``image_normalizer`` holds for Stable
unCLIP) before it is decoded; the caption decoder normalises its input itself, and retrieval
(cosine) does not depend on it.

What is decoded (``source``): the brain model's pooled embedding (``direction``), or the samples
of its diffusion prior (``prior``: MindEye2's recipe, the contrastive embedding mapped onto the
distribution of CLIP image embeddings the decoders were trained on) where the brain file has them
(``infer --prior``); ridge and true embeddings have no prior and are decoded as they are. The
captions are decoded from the same. With a ``latent`` head in the brain file, its VAE decoding is
the blurry low-level reconstruction, and with ``img2img`` the reconstructions start from it
(``strength``). ``decode.h5``'s attributes ``decoded`` (``prior`` or ``pooled``) and ``img2img``
say which recipe made each folder.

Best of n (MindEye2): each prediction is decoded ``n_samples`` times with different seeds, each
sample is embedded by the decoding CLIP model, and the one most similar to ``select_by`` is kept:
the brain model's pooled embedding (``direction``) or what was decoded (``source``: the prior's
sample where decoded from it, as MindEye selects against its prior's output). The evaluation
judges with another CLIP (:mod:`.evaluate.judge`).
The folder is written under a temporary name and renamed when complete.

The decoders read the CLIP model's pooled image embedding; the prediction must have the width they
were trained on (a CLIP/decoder mismatch is an error here, before anything is generated).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .command import Command, key_values, one_per, set_threads
from .errors import InputError

__all__ = ["DecodeSettings", "Decoders", "decode", "read_predictions", "retrieve", "image_name", "read_captions_tsv",
           "read_images", "true_embeddings", "recipe_attrs", "read_recipe", "recipe_text"]


#: what decode turns into images and captions (DecodeSettings.source)
SOURCES = ("direction", "prior")
#: what best of n compares each sample with (DecodeSettings.select_by)
SELECT_BY = ("direction", "source")


@dataclass(frozen=True)
class DecodeSettings:
    """How predictions are decoded (config section ``decode``)."""

    protocol: str = "avg_betas"
    # what is decoded into images and captions: the brain model's "prior" samples (MindEye2: the
    # diffusion prior maps the contrastive embedding onto the distribution of CLIP image
    # embeddings) where the brain file has them, else (and with "direction") its pooled embedding
    source: str = "direction"
    n_samples: int = 1
    # best of n keeps the sample nearest the brain model's pooled embedding ("direction") or
    # nearest what was decoded ("source": the prior's sample, where decoded from the prior)
    select_by: str = "direction"
    seed: int = 0
    guidance_scale: float | None = None  # None: the image decoder's default
    num_inference_steps: int | None = None
    # img2img from the blurry low-level reconstruction, when the brain file has a latent head
    img2img: bool = False
    strength: float | None = None  # its strength (None: the image decoder's default)
    top_k: int = 5
    max_images: int | None = None  # reconstruct only the first N sorted test images (None: all)
    match_norm: bool = True  # rescale predictions to the mean norm of the CLIP image embeddings
    caption_beams: int = 1
    max_new_tokens: int = 40
    batch_size: int = 32

    def __post_init__(self):
        if self.max_images is not None and int(self.max_images) < 1:
            raise InputError(f"decode settings: max_images must be >= 1 or null (got {self.max_images})")
        if int(self.n_samples) < 1 or int(self.top_k) < 1 or int(self.batch_size) < 1:
            raise InputError(f"decode settings: n_samples, top_k and batch_size must be >= 1 "
                             f"(got {self.n_samples}, {self.top_k}, {self.batch_size})")
        if self.source not in SOURCES:
            raise InputError(f"decode settings: source {self.source!r}; expected one of {list(SOURCES)}")
        if self.select_by not in SELECT_BY:
            raise InputError(f"decode settings: select_by {self.select_by!r}; expected one of {list(SELECT_BY)}")


def image_name(nsd_id: int) -> str:
    return f"{int(nsd_id):05d}.png"


def read_predictions(brain_h5, protocol: str = "avg_betas") -> tuple[np.ndarray, dict, dict]:
    """``(nsd_id, {head: array}, attrs)`` of one protocol of an infer-stage file."""
    import h5py

    p = Path(brain_h5)
    if not p.is_file():
        raise InputError(f"{p}: brain embeddings file not found (the infer stage's output)")
    with h5py.File(p, "r") as f:
        if protocol not in f:
            have = [k for k in f if isinstance(f[k], h5py.Group)]
            raise InputError(f"{p}: no protocol {protocol!r}; the file has {have}")
        ids = f["nsd_id"][:].astype(np.int64)
        heads = {k: f[protocol][k][:] for k in f[protocol]}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    if "pooled" not in heads:
        raise InputError(f"{p}: protocol {protocol!r} has no pooled prediction (heads {sorted(heads)}); the image "
                         f"and caption decoders read pooled CLIP embeddings")
    return ids, heads, attrs


def true_embeddings(embed, ids) -> np.ndarray:
    """The embed stage's pooled image embeddings of ``ids`` (sorted)."""
    from .brain.data import load_targets

    tg = load_targets(embed, heads=("pooled",), ids=ids)
    return np.asarray(tg.arrays["pooled"][tg.rows(ids)], np.float32)


def cosine_similarity(a, b) -> np.ndarray:
    """(len(a), len(b)) cosine similarities of flattened rows (float64)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def retrieve(pred, true, ids, k: int = 5) -> np.ndarray:
    """(n, k) nsd ids of the candidates (rows of ``true``) most similar to each prediction."""
    cos = cosine_similarity(pred, true)
    k = min(int(k), cos.shape[1])
    order = np.argsort(-cos, axis=1, kind="stable")[:, :k]
    return np.asarray(ids, np.int64)[order]


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.asarray(img, np.uint8), "RGB").save(path, optimize=False)


def _check_width(what: str, want: int, got: int, brain_h5) -> None:
    if int(want) != int(got):
        raise InputError(f"{brain_h5}: predictions are {got}-d but the {what} reads {want}-d CLIP embeddings; "
                         f"models.clip must be the CLIP space the decoders were trained in")


class Decoders:
    """The image decoder, the caption decoder and (for best of n) the CLIP model, loaded once for
    many decode calls."""

    def __init__(self, image_decoder="sim", captioner="sim", clip="sim", sim_dirs: dict | None = None,
                 device: str = "cpu"):
        from .decoders.captioner import Captioner
        from .decoders.image_decoder import ImageDecoder

        sim_dirs = sim_dirs or {}
        self.device = device
        self.image = ImageDecoder.load(image_decoder, sim_dir=sim_dirs.get("image_decoder"), device=device)
        self.caption = Captioner.load(captioner, sim_dir=sim_dirs.get("captioner"), device=device)
        self._clip_spec = (clip, sim_dirs.get("clip"))
        self._clip = None

    @property
    def clip(self):
        if self._clip is None:
            from .decoders.clip import ClipEncoder

            self._clip = ClipEncoder.load(self._clip_spec[0], sim_dir=self._clip_spec[1], device=self.device)
        return self._clip

    def describe(self, with_clip: bool) -> dict:
        d = {"image_decoder": self.image.describe(), "captioner": self.caption.describe()}
        if with_clip:
            d["clip"] = self.clip.describe()
        return d


def decode(brain_h5, out_dir, *, embed, image_decoder="sim", captioner="sim", clip="sim",
           sim_dirs: dict | None = None, settings: DecodeSettings | None = None, threads: int | None = None,
           progress: bool = False, decoders: Decoders | None = None) -> Path:
    """Write the decode folder ``out_dir`` (see the module docstring) for one infer-stage file;
    ``decoders`` (already loaded) replaces the three model configs."""
    import h5py
    import torch

    from .io import atomic_dir

    s = settings or DecodeSettings()
    if threads:
        torch.set_num_threads(int(threads))
    ids, heads, attrs = read_predictions(brain_h5, s.protocol)
    direction = heads["pooled"].astype(np.float32)
    retrieved = retrieve(direction, true_embeddings(embed, ids), ids, s.top_k)
    decoded = "prior" if s.source == "prior" and "prior" in heads else "pooled"
    pred = heads[decoded].reshape(len(ids), -1).astype(np.float32)
    models = decoders or Decoders(image_decoder, captioner, clip, sim_dirs)
    dec, cap = models.image, models.caption
    scale = None
    if s.match_norm:
        scale = dec.embed_scale
        pred = (pred / np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12) * scale).astype(np.float32)

    _check_width("image decoder", dec.embed_dim, pred.shape[1], brain_h5)
    _check_width("caption decoder", cap.clip_dim, pred.shape[1], brain_h5)
    enc = None
    if s.n_samples > 1:
        enc = models.clip
        _check_width("CLIP model", enc.embed_dim, pred.shape[1], brain_h5)

    n = len(ids) if s.max_images is None else min(len(ids), int(s.max_images))  # images reconstructed
    target = (direction if s.select_by == "direction" else pred)[:n]  # what best of n compares with
    blurry = dec.decode_latents(heads["latent"][:n]) if "latent" in heads else None
    init = blurry if s.img2img else None
    samples = []
    cos = np.full((n, s.n_samples), np.nan, np.float32)
    for j in range(s.n_samples):
        imgs = dec.generate(pred[:n], init, strength=s.strength if init is not None else None,
                            guidance_scale=s.guidance_scale, num_inference_steps=s.num_inference_steps,
                            seed=s.seed + 7919 * j, batch_size=s.batch_size, progress=progress)
        if enc is not None:  # best of n: the sample the decoding CLIP finds nearest the target
            e = enc.encode_images(imgs, what=("pooled",))["pooled"]
            cos[:, j] = np.einsum("nd,nd->n", *(x / np.linalg.norm(x, axis=1, keepdims=True)
                                                for x in (e, target)))
        samples.append(imgs)
    best = np.zeros(n, np.int64) if enc is None else np.argmax(cos, axis=1)
    images = np.stack(samples)[best, np.arange(n)]
    captions = cap.generate(pred, max_new_tokens=s.max_new_tokens, num_beams=s.caption_beams, progress=progress)

    described = models.describe(with_clip=enc is not None)
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        for i, img in zip(ids[:n], images):
            _write_png(tmp / "images" / image_name(i), img)
        if blurry is not None:
            (tmp / "blurry").mkdir()
            for i, img in zip(ids[:n], blurry):
                _write_png(tmp / "blurry" / image_name(i), img)
        with open(tmp / "captions.tsv", "w", encoding="utf-8") as fh:
            fh.write("nsd_id\tcaption\n")
            for i, c in zip(ids, captions):
                fh.write(f"{int(i)}\t{' '.join(c.split())}\n")
        with h5py.File(tmp / "decode.h5", "w") as f:
            f.create_dataset("nsd_id", data=ids, track_times=False)
            f.create_dataset("retrieved", data=retrieved, track_times=False)
            f.create_dataset("best_of_n", data=best, track_times=False)
            f.create_dataset("sample_similarity", data=cos, track_times=False)
            f.attrs["method"] = str(attrs.get("method", ""))
            f.attrs["subject"] = str(attrs.get("subject", ""))
            f.attrs["protocol"] = s.protocol
            f.attrs["brain"] = str(brain_h5)
            f.attrs.update(recipe_attrs(s, decoded, init is not None))
            f.attrs["decoded_norm"] = np.nan if scale is None else scale
            f.attrs["n_reconstructed"] = int(n)
            f.attrs["models"] = json.dumps(described, default=str)
    return Path(out_dir)


def recipe_attrs(settings: DecodeSettings, decoded: str, img2img: bool) -> dict:
    """``decode.h5``'s attributes that say what made the folder (read back by :func:`read_recipe`)."""
    return {"settings": json.dumps(asdict(settings)), "decoded": decoded, "img2img": bool(img2img)}


def read_recipe(decode_dir) -> dict:
    """What made a decode folder's reconstructions and captions, from ``decode.h5``'s attributes:
    ``decoded`` (``prior`` or ``pooled``), ``img2img`` (bool), ``strength``, ``n_samples``,
    ``select_by`` (with n > 1), ``num_inference_steps`` and ``guidance_scale`` (``None``: the image
    decoder's default)."""
    import h5py

    f = Path(decode_dir) / "decode.h5"
    if not f.is_file():
        raise InputError(f"{f}: not found (the decode stage's output)")
    with h5py.File(f, "r") as h:
        lacking = [k for k in ("decoded", "img2img", "settings") if k not in h.attrs]
        if lacking:
            raise InputError(f"{f}: no {', '.join(lacking)} attribute (what made the reconstructions); decode it "
                             f"again with this version")
        a = {k: h.attrs[k] for k in ("decoded", "img2img", "settings")}
    settings = json.loads(a["settings"].decode() if isinstance(a["settings"], bytes) else a["settings"])
    decoded = a["decoded"].decode() if isinstance(a["decoded"], bytes) else str(a["decoded"])
    img2img = bool(a["img2img"])
    n = int(settings["n_samples"])
    return {"decoded": decoded, "img2img": img2img, "strength": settings.get("strength") if img2img else None,
            "n_samples": n, "select_by": settings.get("select_by", "direction") if n > 1 else None,
            "num_inference_steps": settings.get("num_inference_steps"), "guidance_scale": settings.get("guidance_scale")}


def recipe_text(recipe: dict) -> str:
    """One line for a reader: e.g. ``prior samples; img2img from the blurry image at strength 0.7;
    best of 4 by the decoding CLIP against the prior sample; steps 8, guidance decoder default``."""
    def default(v):
        return "decoder default" if v is None else f"{v:g}"

    parts = ["prior samples" if recipe["decoded"] == "prior" else "pooled embedding"]
    if recipe["img2img"]:
        parts.append(f"img2img from the blurry image at strength {default(recipe['strength'])}")
    n = int(recipe["n_samples"])
    if n > 1:
        against = ("the prior sample" if recipe["decoded"] == "prior" else "the decoded embedding") \
            if recipe.get("select_by") == "source" else "the brain model's pooled embedding"
        parts.append(f"best of {n} by the decoding CLIP against {against}")
    else:
        parts.append("one sample")
    steps = recipe["num_inference_steps"]
    parts.append(f"steps {default(steps)}, guidance {default(recipe['guidance_scale'])}")
    return "; ".join(parts)


def read_captions_tsv(path) -> dict[int, str]:
    """``{nsd_id: caption}`` of a decode folder's ``captions.tsv``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: captions file not found (the decode stage's output)")
    out = {}
    lines = p.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t") != ["nsd_id", "caption"]:
        raise InputError(f"{p}: expected a header 'nsd_id<TAB>caption'")
    for k, line in enumerate(lines[1:], 2):
        i, sep, c = line.partition("\t")
        if not sep:
            raise InputError(f"{p}:{k}: expected 'nsd_id<TAB>caption'")
        out[int(i)] = c
    return out


def read_images(folder, ids) -> np.ndarray:
    """(n, H, W, 3) uint8 images ``folder/{nsd_id:05d}.png`` of ``ids``."""
    from PIL import Image

    folder = Path(folder)
    out = []
    for i in ids:
        p = folder / image_name(i)
        if not p.is_file():
            raise InputError(f"{p}: image not found (the decode stage's output for nsd id {int(i)})")
        out.append(np.asarray(Image.open(p).convert("RGB")))
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


# ------------------------------------------------------------------------------- subcommand
def _arguments(s) -> None:
    s.add_argument("--brain", nargs="+", required=True,
                   help="the infer stage's HDF5 of a (method, subject); several are decoded in one process")
    s.add_argument("--embed", required=True, help="the embed stage's HDF5 (the retrieval candidates)")
    s.add_argument("--image-decoder", required=True,
                   help="image decoder config: sim (nsd-sim's), a pipeline folder or JSON")
    s.add_argument("--captioner", required=True, help="caption decoder config: sim (nsd-sim's), a folder or JSON")
    s.add_argument("--clip", required=True,
                   help="the decoding CLIP's config, the embed stage's (best-of-n ranks samples with it): sim or JSON")
    for kind in ("clip", "image-decoder", "captioner"):
        s.add_argument(f"--sim-{kind}", default=None, help=f"folder of the trained nsd-sim {kind} that 'sim' refers to")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a decode setting (YAML value), e.g. n_samples=4 or num_inference_steps=10 (repeatable)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--device", default="cpu", help="torch device of the decoders, e.g. cuda (default: cpu)")
    s.add_argument("--out", nargs="+", required=True,
                   help="output folder per --brain file, e.g. results/decode/adapt-k1/subj04")
    s.add_argument("--quiet", action="store_true", help="no progress bars")


def _run(args) -> int:
    import dataclasses

    known = {f.name for f in dataclasses.fields(DecodeSettings)}
    settings = DecodeSettings(**key_values(args.set, known=known, example="n_samples=4"))
    pairs = one_per("--brain", args.brain, "--out", args.out)
    set_threads(args.threads)
    sims = {"clip": args.sim_clip, "image_decoder": args.sim_image_decoder, "captioner": args.sim_captioner}
    models = Decoders(args.image_decoder, args.captioner, args.clip, sims, device=args.device)
    for brain, out in pairs:
        print(decode(brain, out, embed=args.embed, settings=settings, decoders=models, progress=not args.quiet),
              flush=True)
    return 0


COMMANDS = {
    "decode": Command("brain embeddings -> retrieved images, reconstructions (PNG), captions (TSV)", _arguments, _run),
}
