"""Published numbers on real NSD, shown beside (never mixed into) this run's metrics.

Source: Scotti, Tripathy, Torrico Villanueva, Kneeland, Chen, Narang, Santhirasegaran, Xu,
Naselaris, Norman, Abraham (2024), "MindEye2: Shared-Subject Models Enable fMRI-To-Image With 1 Hour
of Data", ICML 2024 (PMLR 235), arXiv:2403.11207v2 (15 Jun 2024), **Table 1** "Quantitative
comparison of fMRI-to-image models": averages over NSD subjects 1, 2, 5 and 7, all 40 sessions
(except the 1-hour row: the first session), test set = the shared1000 images with repeats averaged;
retrieval is top-1 among 300 candidates (image retrieval: the image given the brain sample, i.e.
this project's ``retrieval_brain2image_top1``; brain retrieval the reverse); Eff and SwAV are
correlation distances (lower is better); the other image metrics are two-way identification.

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

__all__ = ["SOURCE", "COLUMNS", "ROWS"]

SOURCE = {
    "citation": "Scotti et al. (2024), MindEye2: Shared-Subject Models Enable fMRI-To-Image With 1 Hour of Data, "
                "ICML 2024 (PMLR 235)",
    "url": "https://arxiv.org/abs/2403.11207v2",
    "table": "Table 1 (averaged over NSD subjects 1, 2, 5, 7; retrieval top-1 among 300 candidates)",
}

# (metric name in metrics.tsv, column label in the paper)
COLUMNS = (
    ("pixcorr", "PixCorr"),
    ("ssim", "SSIM"),
    ("twoway_alexnet2", "Alex(2)"),
    ("twoway_alexnet5", "Alex(5)"),
    ("twoway_inception", "Incep"),
    ("twoway_clip", "CLIP"),
    ("dist_effnet", "Eff"),
    ("dist_swav", "SwAV"),
    ("retrieval_brain2image_top1", "Image retrieval"),
    ("retrieval_image2brain_top1", "Brain retrieval"),
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
