"""Published numbers on real NSD, shown beside (never mixed into) this run's metrics.

Source: Scotti, Tripathy, Torrico Villanueva, Kneeland, Chen, Narang, Santhirasegaran, Xu,
Naselaris, Norman, Abraham (2024), "MindEye2: Shared-Subject Models Enable fMRI-To-Image With 1 Hour
of Data", ICML 2024 (PMLR 235), arXiv:2403.11207v2 (15 Jun 2024), **Table 1** "Quantitative
comparison of fMRI-to-image models": averages over NSD subjects 1, 2, 5 and 7, all 40 sessions
(except the 1-hour row: the first session), test set = the shared1000 images with repeats averaged;
retrieval is top-1 among 300 candidates (30 random draws); Eff and SwAV are correlation distances
(lower is better); the other image metrics are two-way identification.

Which retrieval is which, from the code that computed the table (MedARC-AI/MindEyeV2
``src/final_evaluations.ipynb`` and ``src/utils.py``)::

    def batchwise_cosine_similarity(Z,B):
        Z = Z.flatten(1)
        B = B.flatten(1).T
        ...
        cosine_similarity = ((Z @ B) / (Z_norm @ B_norm)).T
    def topk(similarities,labels,k=5):
        ... torch.argsort(similarities,axis=1)[:,-(i+1)] == labels ...
    emb = clip_img_embedder(all_images[random_samps]...)   # CLIP-Image
    emb_ = all_clipvoxels[random_samps]...                  # CLIP-Brain
    fwd_sim = utils.batchwise_cosine_similarity(emb_,emb)  # brain, clip
    percent_correct_fwds = ... utils.topk(fwd_sim, labels,k=1) ...

``fwd_sim = ((brain @ clip.T) / norms).T`` has the *images* as rows, and ``topk`` takes each
row's best column: "fwd percent correct" is, for each image, whether its own brain sample is the
most similar of the 300: image→brain, this project's ``retrieval_image2brain_top1``. It is the
table's first retrieval column ("FwdRetrieval" before "BwdRetrieval" in the notebook's table,
"Image retrieval" before "Brain retrieval" in the paper's), so :data:`COLUMNS` puts the published
"Image retrieval" beside ``retrieval_image2brain_top1`` (computed the same way), and "Brain
retrieval" (``bwd_sim``: the brain samples as rows, each one's best image) beside
``retrieval_brain2image_top1``. The comment in the code (``# brain, clip``) names the arguments,
not the rows.

:data:`PROTOCOL` is how MindEye2 scored the table, and :func:`protocol_differences` what of it a
part of this run's evaluation does not share (the report marks each row): retrieval on the
flattened ViT-bigG tokens, the 256 px image chain without antialiasing, OpenAI's CLIP ViT-L/14 as
the judge of two-way CLIP, and all 1,000 shared test images.

Every number below was checked against the text of that table (the paper's full text, Table 1
rows "MindEye2", "MindEye2 (1 hour)", "MindEye1", "Ozcelik and VanRullen (2023)"; the retrieval
pairs 98.8/98.3 and 79.0/57.4 were also cross-checked against an independent reproduction script
quoting the same table). "Brain-Diffuser" is Ozcelik and VanRullen (2023), recomputed by the
MindEye2 authors with its public code on the full 40 sessions. No caption metrics are listed: the
paper's caption table (Table 2) is subject 1 only and uses other references, so it is not
comparable in form. Fractions are stored as fractions (0.961 for 96.1%) so they format like this
run's numbers.
"""

from __future__ import annotations

__all__ = ["SOURCE", "COLUMNS", "ROWS", "PROTOCOL", "protocol_differences"]

SOURCE = {
    "citation": "Scotti et al. (2024), MindEye2: Shared-Subject Models Enable fMRI-To-Image With 1 Hour of Data, "
                "ICML 2024 (PMLR 235)",
    "url": "https://arxiv.org/abs/2403.11207v2",
    "table": "Table 1 (averaged over NSD subjects 1, 2, 5, 7; retrieval top-1 among 300 candidates)",
}

# (metric name in metrics.tsv computed the way the column was, column label in the paper)
COLUMNS = (
    ("pixcorr", "PixCorr"),
    ("ssim", "SSIM"),
    ("twoway_alexnet2", "Alex(2)"),
    ("twoway_alexnet5", "Alex(5)"),
    ("twoway_inception", "Incep"),
    ("twoway_clip", "CLIP"),
    ("dist_effnet", "Eff"),
    ("dist_swav", "SwAV"),
    ("retrieval_image2brain_top1", "Image retrieval"),  # MindEye's fwd: each image's best brain sample
    ("retrieval_brain2image_top1", "Brain retrieval"),  # MindEye's bwd: each brain sample's best image
)

_KEYS = [m for m, _ in COLUMNS]


def _row(*values):
    assert len(values) == len(_KEYS)
    return dict(zip(_KEYS, values))


# label, {metric: value}; order and values as in Table 1 of arXiv:2403.11207v2
ROWS = (
    ("MindEye2 (40 h)", _row(0.322, 0.431, 0.961, 0.986, 0.954, 0.930, 0.619, 0.344, 0.988, 0.983)),
    ("MindEye2 (1 h)", _row(0.195, 0.419, 0.842, 0.906, 0.812, 0.792, 0.810, 0.468, 0.790, 0.574)),
    ("MindEye1", _row(0.319, 0.360, 0.928, 0.969, 0.946, 0.933, 0.648, 0.377, 0.900, 0.841)),
    ("Brain-Diffuser", _row(0.273, 0.365, 0.944, 0.966, 0.913, 0.909, 0.728, 0.421, 0.188, 0.263)),
)


#: MindEye2's evaluation protocol (Table 1): what a row must share to be compared with it
PROTOCOL = {
    "retrieval_head": "tokens",          # flattened ViT-bigG/14 tokens (256 x 1664)
    "image_protocol": {"base": 256, "antialias": False},
    "judge_family": "ViT-L-14",          # OpenAI's CLIP ViT-L/14 judges two-way CLIP
    "n_images": 1000,                    # every shared test image, each reconstructed
}


def protocol_differences(info: dict) -> list[str] | None:
    """What of :data:`PROTOCOL` one part's evaluation (its ``info``) does not share: ``[]`` when it
    follows it, ``None`` when the part records no protocol (the oracle; parts of older versions)."""
    if not info or "retrieval" not in info or "image_protocol" not in info:
        return None
    out = []
    head = info["retrieval"].get("head", "pooled")
    if head != PROTOCOL["retrieval_head"]:
        out.append(f"retrieval on {head}, not tokens")
    chain = {k: info["image_protocol"].get(k) for k in ("base", "antialias")}
    if chain != PROTOCOL["image_protocol"]:
        out.append("image chain " + ("one antialiased resize" if chain == {"base": None, "antialias": True} else
                                     f"base {chain['base']}, antialias {'on' if chain['antialias'] else 'off'}")
                   + ", not 256 px without antialiasing")
    judge = (info.get("judge_clip") or {}).get("family")
    if judge != PROTOCOL["judge_family"]:
        out.append(f"judge {judge or 'not recorded'}, not ViT-L-14")
    n, m = int(info.get("n", 0)), int(info.get("n_reconstructed", info.get("n", 0)))
    if n != PROTOCOL["n_images"] or m != n:
        out.append(f"{m} of {n} test images reconstructed, not all 1,000")
    return out
