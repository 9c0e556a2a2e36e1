"""Score one (method, subject): the metric battery on its test images, kept per item.

:func:`score` reads the infer-stage predictions (``results/brain/{method}/subjAA.h5``), the decode
folder (``results/decode/{method}/subjAA/``), the embed stage's CLIP embeddings and captions, the
NSD stimuli and, on nsd-sim, the truth's scene attributes. :func:`score_oracle` scores nsd-sim's
Bayes-optimal identification (:mod:`.oracle`). Both return a :class:`Scores` and can be written to
and read from one HDF5 "part" file; :mod:`.collect` turns the parts into ``metrics.tsv`` with
bootstrap confidence intervals over test images.

Per metric: ``value`` (the figure reported: the protocol's number, e.g. retrieval averaged over
draws, corpus BLEU), ``items`` (n,) the per-image scores a bootstrap resamples (NaN for the image
metrics of test images the decode stage did not reconstruct, ``decode.max_images``), and ``kind``:
``mean`` (value = mean of items) or ``corpus`` (value computed on the whole set; its CI resamples
the per-item scores' mean and is shifted onto the value — stated in the report). A metric that
cannot be computed because its weights are not configured is ``unavailable`` (never a number).

What is scored, and recorded in the part's ``info`` (the report's protocol table reads it):

- ``protocol``: the infer protocol the decode folder decoded (``decode.h5``'s ``protocol``
  attribute; an :class:`InputError` if it has none): retrieval and every other metric score the
  same predictions the reconstructions and captions came from.
- ``retrieval``: ``head`` ``pooled`` (the brain file's pooled prediction against the embed
  file's ``image_pooled``) or ``tokens`` (its ``tokens`` against ``image_tokens``, flattened;
  float16 storage read, cosine computed in float32), ``n_candidates``, ``n_draws``, ``n``.
- ``judge_clip``: the CLIP that scored ``twoway_clip`` and ``clip_s`` (:mod:`.judge`: name,
  family, config, weights and their SHA-256, whether they are the decoding CLIP's);
  ``decoding_clip``: the embed file's CLIP (``model``, ``weights_sha256``), which evaluate uses
  only through the embed file's embeddings.
- ``image_protocol``: the image chain of PixCorr, SSIM and the feature nets
  (:class:`.images.ImageProtocol`: ``base``, ``antialias``, ``name``).
- ``n_reconstructed``: how many of the ``n`` test images the image metrics cover.
- ``decode_recipe``: what made the reconstructions and captions (:func:`braindecode_pkg.decode.read_recipe`:
  prior samples or the pooled embedding, img2img and its strength, best of n, sampling steps).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["Scores", "Scorer", "score", "score_oracle", "write_part", "read_part", "decoded_protocol", "unit_rows",
           "METRICS", "IMAGE_SIZE", "RETRIEVAL_HEADS"]

#: metric names in table order
METRICS = (
    "retrieval_brain2image_top1", "retrieval_image2brain_top1", "pixcorr", "ssim", "twoway_clip",
    "twoway_alexnet2", "twoway_alexnet5", "twoway_inception", "dist_effnet", "dist_swav",
    "bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider", "clip_s", "attr_acc",
)
#: side the stimuli and reconstructions are compared at (NSD's stimulus size; MindEye's protocol)
IMAGE_SIZE = 425


@dataclass
class Scores:
    """Scores of one (method, subject): ``metrics[name] = {"value", "items", "kind"}`` or
    ``{"unavailable": reason}``."""

    method: str
    subject: str
    nsd_id: np.ndarray
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    #: per-item arrays some intervals need besides the scores: ``bleu_stats`` (n-gram counts,
    #: :func:`.captions.bleu_stats`) for exact corpus-BLEU resamples
    extra: dict = field(default_factory=dict)

    def add(self, name: str, items, value: float | None = None, kind: str = "mean") -> None:
        items = np.asarray(items, np.float64).reshape(-1)
        if len(items) != len(self.nsd_id):
            raise ValueError(f"{name}: {len(items)} item scores for {len(self.nsd_id)} test images")
        v = float(np.nanmean(items)) if value is None else float(value)
        self.metrics[name] = {"value": v, "items": items, "kind": kind}

    def unavailable(self, name: str, reason: str) -> None:
        self.metrics[name] = {"unavailable": reason}


def _stimuli(nsd_root, ids) -> np.ndarray:
    import h5py

    from ..data.layout import NSDPaths
    from ..embed.stimuli import read_rows

    path = NSDPaths(nsd_root).stimuli
    if not Path(path).is_file():
        raise InputError(f"{path}: stimulus images not found (NSD's nsd_stimuli.hdf5)")
    with h5py.File(path, "r") as f:
        return read_rows(f["imgBrick"], np.asarray(ids, np.int64))


def _embed_rows(embed, ids) -> dict:
    """The embed file's pooled image embeddings and caption texts of ``ids``, and which CLIP
    made them (the decoding CLIP: ``model``, ``weights_sha256``)."""
    import h5py

    from ..brain.data import find_rows
    from ..embed.stimuli import read_rows, verify_embeddings

    p = Path(embed)
    if not p.is_file():
        raise InputError(f"{p}: embeddings file not found (the embed stage writes it)")
    verify_embeddings(p)
    with h5py.File(p, "r") as f:
        rows = find_rows(f["nsd_id"][:], ids, p, "embedding")
        if "image_pooled" not in f:
            raise InputError(f"{p}: no image_pooled (embed with --what pooled or both)")
        pooled = read_rows(f["image_pooled"], rows).astype(np.float32, copy=False)
        caps = read_rows(f["captions"], rows)
        n_caps = f["n_captions"][:][rows]
        clip = {k: _text(f.attrs[k]) for k in ("model", "weights_sha256") if k in f.attrs}
    refs = [[c.decode() if isinstance(c, bytes) else str(c) for c in row[:k]] for row, k in zip(caps, n_caps)]
    return {"pooled": pooled, "captions": refs, "decoding_clip": clip}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def unit_rows(x, block: int = 64) -> np.ndarray:
    """``(n, D)`` float32 rows of ``x`` (``(n, ...)``, any float dtype, e.g. float16 tokens or an
    HDF5 dataset) flattened and L2-normalised, a block of rows at a time (no float64 copy)."""
    n = len(x)
    width = int(np.prod(x.shape[1:])) if len(x.shape) > 1 else 1
    out = np.empty((n, width), np.float32)
    for a in range(0, n, block):
        r = np.asarray(x[a:a + block], np.float32).reshape(-1, width)
        out[a:a + len(r)] = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    return out


def _embed_tokens(embed, ids) -> np.ndarray:
    """The embed file's ``image_tokens`` of ``ids``, flattened and L2-normalised (float32)."""
    import h5py

    from ..brain.data import find_rows
    from ..embed.stimuli import read_rows

    p = Path(embed)
    with h5py.File(p, "r") as f:
        if "image_tokens" not in f:
            raise InputError(f"{p}: no image_tokens, which evaluate.retrieval_head tokens retrieves on "
                             f"(embed with --what tokens or both)")
        rows = find_rows(f["nsd_id"][:], ids, p, "embedding")
        return unit_rows(read_rows(f["image_tokens"], rows))


def decoded_protocol(decode_dir) -> str:
    """The infer protocol a decode folder decoded (``decode.h5``'s ``protocol``): what is scored."""
    import h5py

    f = Path(decode_dir) / "decode.h5"
    if not f.is_file():
        raise InputError(f"{f}: not found (the decode stage's output)")
    with h5py.File(f, "r") as h:
        if "protocol" not in h.attrs:
            raise InputError(f"{f}: no protocol attribute (which infer protocol was decoded: avg_betas or "
                             f"avg_outputs); decode it again with this version")
        return _text(h.attrs["protocol"])


RETRIEVAL_HEADS = ("pooled", "tokens")


class Scorer:
    """Scores many (method, subject) pairs in one process: the judge CLIP, METEOR's Java process,
    and the stimuli of the last test set seen (their pixels, judge features and tokenised
    captions) are loaded once and shared. Use as a context manager (ends the Java process).

    ``judge_clip`` / ``sim_judge_clip``: the CLIP that scores two-way identification and CLIP-S
    (:mod:`.judge`; never the decoding CLIP, whose embeddings reach evaluate only through the
    embed file). ``image_protocol``: the image chain (:class:`.images.ImageProtocol`; default one
    antialiased resize). ``retrieval_head``: ``pooled`` or ``tokens`` (the brain file's ``tokens``
    against the embed file's ``image_tokens``, flattened), for every :meth:`score` that does not
    give its own. The infer protocol scored is the one the decode folder decoded.
    """

    def __init__(self, *, embed, nsd_root, judge_clip="sim", sim_judge_clip=None,
                 feature_weights: dict | None = None, image_protocol=None, retrieval_head: str = "pooled",
                 n_candidates: int = 300, n_draws: int = 30, seed: int = 0, device: str = "cpu"):
        from .images import DEFAULT_CHAIN, ImageProtocol
        from .judge import is_sim, parse_judge_config

        self.embed, self.nsd_root, self.device = embed, nsd_root, device
        self.judge_config = parse_judge_config(judge_clip, sim_dir=sim_judge_clip)  # a missing judge stops here
        self._judge_sim = is_sim(judge_clip)
        self.image_protocol = DEFAULT_CHAIN if image_protocol is None else ImageProtocol.parse(image_protocol)
        self.retrieval_head = _check_head(retrieval_head)
        self.feature_weights = dict(feature_weights or {})
        self.n_candidates, self.n_draws, self.seed = n_candidates, n_draws, seed
        self._judge = self._meteor = self._judge_info = None
        self._ref: tuple | None = None  # (ids, references of those ids)
        self._tokens: tuple | None = None  # (ids, the embed file's unit tokens of those ids)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._meteor is not None:
            m, self._meteor = self._meteor, None
            del m  # pycocoevalcap's Meteor ends its Java process when collected

    @property
    def judge(self):
        """The judge CLIP's encoder (loaded on first use)."""
        if self._judge is None:
            from ..decoders.clip import ClipEncoder

            self._judge = ClipEncoder.load(self.judge_config, device=self.device)
        return self._judge

    @property
    def meteor(self):
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            from .captions import _java

            _java()
            self._meteor = Meteor()
        return self._meteor

    def references(self, ids) -> dict:
        """The stimuli of ``ids``: pixels, judge CLIP features, true pooled embeddings, captions
        (as given and COCO-tokenised); cached for the last ``ids``."""
        from . import captions as cm
        from . import images as im
        from .judge import describe_judge

        ids = np.asarray(ids, np.int64)
        if self._ref is None or not np.array_equal(self._ref[0], ids):
            ref = _embed_rows(self.embed, ids)
            ref["stimuli"] = _stimuli(self.nsd_root, ids)
            ref["clip"] = im.clip_features(self.judge, ref["stimuli"], size=IMAGE_SIZE)
            ref["captions_tok"] = cm.tokenize_refs(ref["captions"])
            if self._judge_info is None:
                self._judge_info = describe_judge(self.judge_config, sim=self._judge_sim,
                                                  decoder_sha256=ref["decoding_clip"].get("weights_sha256"))
            self._ref = (ids, ref)
        return self._ref[1]

    def image_tokens(self, ids) -> np.ndarray:
        """The embed file's image tokens of ``ids``, flattened and L2-normalised; cached for the last ``ids``."""
        ids = np.asarray(ids, np.int64)
        if self._tokens is None or not np.array_equal(self._tokens[0], ids):
            self._tokens = None  # free the last set before reading the next
            self._tokens = (ids, _embed_tokens(self.embed, ids))
        return self._tokens[1]

    def score(self, brain_h5, decode_dir, *, truth=None, method: str | None = None,
              retrieval_head: str | None = None) -> Scores:
        """Every metric of one (method, subject) (see the module docstring), on the infer protocol
        its decode folder decoded; ``retrieval_head`` overrides the scorer's."""
        from ..decode import read_predictions, read_recipe

        protocol = decoded_protocol(decode_dir)
        ids, heads, attrs = read_predictions(brain_h5, protocol)
        _check_decoded_ids(decode_dir, ids)
        out = Scores(method or str(attrs.get("method", "")), str(attrs.get("subject", "")), ids,
                     info={"brain": str(brain_h5), "decode": str(decode_dir), "protocol": protocol,
                           "n": int(len(ids)), "decode_recipe": read_recipe(decode_dir)})
        ref = self.references(ids)
        out.info["judge_clip"] = dict(self._judge_info)
        out.info["decoding_clip"] = dict(ref["decoding_clip"])
        out.info["image_protocol"] = {**self.image_protocol.to_dict(), "name": self.image_protocol.name}
        self._score_retrieval(out, brain_h5, heads, ref, _check_head(retrieval_head or self.retrieval_head))
        self._score_images(out, Path(decode_dir), ref)
        self._score_captions(out, Path(decode_dir), ref, truth)
        return out

    def _score_retrieval(self, out: Scores, brain_h5, heads: dict, ref: dict, head: str) -> None:
        from .retrieval import retrieval

        if head == "tokens":
            if "tokens" not in heads:
                raise InputError(f"{brain_h5}: no tokens head under protocol {out.info['protocol']!r} (heads "
                                 f"{sorted(heads)}), which evaluate.retrieval_head tokens retrieves on")
            image = self.image_tokens(out.nsd_id)
            brain = unit_rows(heads["tokens"])
            if brain.shape != image.shape:
                raise InputError(f"{brain_h5}: predicted tokens of {brain.shape[1]} numbers per image, the embed "
                                 f"file's image tokens {image.shape[1]}")
            cos = brain @ image.T  # cosine, float32
            del brain
        else:
            cos = None
        r = retrieval(heads["pooled"] if cos is None else None, ref["pooled"] if cos is None else None,
                      similarity=cos, n_candidates=self.n_candidates, n_draws=self.n_draws, seed=self.seed,
                      per_item=True)
        out.add("retrieval_brain2image_top1", r["brain_to_image_items"], r["brain_to_image"], kind="corpus")
        out.add("retrieval_image2brain_top1", r["image_to_brain_items"], r["image_to_brain"], kind="corpus")
        width = int(np.prod(heads[head].shape[1:])) if head in heads else None
        out.info["retrieval"] = {**{k: r[k] for k in ("n_candidates", "n_draws", "n")}, "head": head,
                                 "width": width}

    def _score_images(self, out: Scores, decode_dir: Path, ref: dict) -> None:
        from ..decode import read_images
        from . import images as im

        ids, chain = out.nsd_id, self.image_protocol
        m = _n_reconstructed(decode_dir, len(ids))  # images of the first m test images (decode.max_images)
        out.info["n_reconstructed"] = m
        recon = read_images(decode_dir / "images", ids[:m])
        stim = ref["stimuli"][:m]

        def per_image(values):  # image metrics of the m reconstructed images; NaN for the rest
            items = np.full(len(ids), np.nan)
            items[:m] = values
            return items

        kw = {"base": chain.base, "antialias": chain.antialias}
        out.add("pixcorr", per_image(im.pixcorr(recon, stim, size=IMAGE_SIZE, **kw)))
        out.add("ssim", per_image(im.ssim(recon, stim, size=IMAGE_SIZE, **kw)))
        # the judge's features of the reconstructions against its features of the stimuli
        out.add("twoway_clip", per_image(im.two_way(im.clip_features(self.judge, recon, size=IMAGE_SIZE),
                                                    ref["clip"][:m])))
        feats = im.feature_metrics(recon, stim, self.feature_weights, **kw, device=self.device)
        for name in ("twoway_alexnet2", "twoway_alexnet5", "twoway_inception", "dist_effnet", "dist_swav"):
            if feats.get(name) is None:
                out.unavailable(name, "no local weights configured (evaluate.feature_weights)")
            else:
                out.add(name, per_image(feats[name]))

    def _score_captions(self, out: Scores, decode_dir: Path, ref: dict, truth) -> None:
        from ..decode import read_captions_tsv
        from . import captions as cm

        ids = out.nsd_id
        caps_by_id = read_captions_tsv(decode_dir / "captions.tsv")
        missing = [int(i) for i in ids if int(i) not in caps_by_id]
        if missing:
            raise InputError(f"{decode_dir / 'captions.tsv'}: no caption for nsd id {missing[0]}")
        preds = [caps_by_id[int(i)] for i in ids]
        preds_t = cm.tokenize(preds)  # COCO's tokenisation, as COCOEvalCap does before every scorer
        scores = cm.coco_metrics(preds_t, ref["captions_tok"], tokenized=True, meteor=self.meteor)
        for name, (value, items) in scores.items():
            out.add(name, items, value, kind="corpus")
        out.extra["bleu_stats"] = cm.bleu_stats(preds_t, ref["captions_tok"], tokenized=True)
        # CLIP-S: the judge's text embedding of the caption against its embedding of the stimulus
        out.add("clip_s", cm.clip_s(self.judge.encode_text(preds), ref["clip"]))
        if truth is not None:
            out.add("attr_acc", cm.attr_acc(preds, cm.read_sim_attributes(truth, ids)))
        else:
            out.unavailable("attr_acc", "nsd-sim only (scene attributes of the simulation's truth)")


def _check_head(head: str) -> str:
    if head not in RETRIEVAL_HEADS:
        raise InputError(f"retrieval head {head!r}: expected one of {', '.join(RETRIEVAL_HEADS)}")
    return head


def _check_decoded_ids(decode_dir, ids) -> None:
    """The decode folder decoded the brain file's test images (its ``nsd_id``)."""
    import h5py

    f = Path(decode_dir) / "decode.h5"
    with h5py.File(f, "r") as h:
        if "nsd_id" in h and not np.array_equal(h["nsd_id"][:], ids):
            raise InputError(f"{f}: decoded {len(h['nsd_id'])} test images that are not the brain file's "
                             f"{len(ids)} (decode the same brain file again)")


def _n_reconstructed(decode_dir: Path, n: int) -> int:
    import h5py

    f = decode_dir / "decode.h5"
    if not f.is_file():
        raise InputError(f"{f}: not found (the decode stage's output)")
    with h5py.File(f, "r") as h:
        if "n_reconstructed" not in h.attrs:
            raise InputError(f"{f}: no n_reconstructed attribute (how many test images have reconstructions); "
                             f"decode it again with this version")
        m = int(h.attrs["n_reconstructed"])
    if not 0 <= m <= n:
        raise InputError(f"{f}: n_reconstructed {m} outside 0..{n} (the test images of the brain file)")
    return m


def score(brain_h5, decode_dir, *, embed, nsd_root, truth=None, method: str | None = None, **kw) -> Scores:
    """Every metric of one (method, subject); ``kw`` as for :class:`Scorer`."""
    with Scorer(embed=embed, nsd_root=nsd_root, **kw) as s:
        return s.score(brain_h5, decode_dir, truth=truth, method=method)


def score_oracle(truth, psc_prep, *, n_candidates: int = 300, n_draws: int = 30, seed: int = 0) -> Scores:
    """nsd-sim's Bayes-optimal identification from the PSC betas (retrieval metrics only)."""
    from .oracle import oracle_loglik
    from .retrieval import retrieval

    import h5py

    with h5py.File(psc_prep, "r") as f:
        subject = f.attrs.get("subject", Path(psc_prep).stem)
    ids, L = oracle_loglik(truth, psc_prep)
    r = retrieval(None, None, similarity=L, n_candidates=n_candidates, n_draws=n_draws, seed=seed,
                  loglik=True, per_item=True)
    out = Scores("oracle", str(subject), ids, info={"truth": str(truth), "prep": str(psc_prep), "n": int(len(ids))})
    out.add("retrieval_brain2image_top1", r["brain_to_image_items"], r["brain_to_image"], kind="corpus")
    out.add("retrieval_image2brain_top1", r["image_to_brain_items"], r["image_to_brain"], kind="corpus")
    return out


def write_part(scores: Scores, path) -> Path:
    """One HDF5 part file: ``nsd_id``, a group per metric (``items`` + attributes)."""
    import h5py

    from ..io import atomic_path

    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("nsd_id", data=np.asarray(scores.nsd_id, np.int64), track_times=False)
        f.attrs["method"] = scores.method
        f.attrs["subject"] = scores.subject
        f.attrs["info"] = json.dumps(scores.info, default=str)
        for name, m in scores.metrics.items():
            g = f.create_group(name)
            if "unavailable" in m:
                g.attrs["unavailable"] = m["unavailable"]
                continue
            g.create_dataset("items", data=m["items"], track_times=False)
            g.attrs["value"] = m["value"]
            g.attrs["kind"] = m["kind"]
        for name, arrays in scores.extra.items():
            g = f.create_group(f"extra/{name}")
            for k, v in arrays.items():
                g.create_dataset(k, data=np.asarray(v), track_times=False)
    return Path(path)


def read_part(path) -> Scores:
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: evaluation part not found (braindecode-pkg evaluate writes it)")
    with h5py.File(p, "r") as f:
        s = Scores(str(f.attrs["method"]), str(f.attrs["subject"]), f["nsd_id"][:],
                   info=json.loads(f.attrs.get("info", "{}")))
        for name in f.get("extra", {}):
            s.extra[name] = {k: v[:] for k, v in f["extra"][name].items()}
        for name in f:
            if name in ("nsd_id", "extra"):
                continue
            g = f[name]
            if "unavailable" in g.attrs:
                s.unavailable(name, str(g.attrs["unavailable"]))
            else:
                s.metrics[name] = {"value": float(g.attrs["value"]), "items": g["items"][:],
                                   "kind": str(g.attrs["kind"])}
    return s
