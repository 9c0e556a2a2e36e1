"""nsd-sim's attribute score of captions: does a caption name each object's shape and colour?

Captions are parsed for the objects they name (:func:`caption_objects`) with the scenes'
vocabulary (:mod:`.scenes`) and compared with the scene's true objects
(:func:`sim_attribute_scores`). The captioner's recipe (:mod:`.recipes.captioner`) and the
caption metrics (:mod:`braindecode_pkg.evaluate.captions`, ``attr_acc``) both use it.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ..errors import InputError
from . import scenes as sc

__all__ = ["caption_objects", "sim_attribute_scores"]


def _caption_pattern():

    colours = "|".join(sc.COLOURS)
    shapes = "|".join(sc.SHAPES)
    sizes = "|".join(w for ws in sc._SIZE_WORDS for w in ws)
    return re.compile(rf"\b(?:({sizes})\s+)?({colours})\s+({shapes})\b", re.IGNORECASE)


def caption_objects(caption: str) -> list[tuple[str, str, str | None]]:
    """The objects a caption names, in order: (colour, shape, size class or None).

    An object is named by a colour word directly followed by a shape word ("a red circle", "a
    large red circle"), as every nsd-sim caption template names it; a colour elsewhere ("a blue
    sky", "green grass") is a background word, not an object. A size word (one of the caption
    synonyms) directly before the colour gives the size class.
    """

    size_of = {w: sc.SIZES[k] for k, ws in enumerate(sc._SIZE_WORDS) for w in ws}
    return [(m.group(2).lower(), m.group(3).lower(), size_of.get((m.group(1) or "").lower()))
            for m in _caption_pattern().finditer(caption)]


def sim_attribute_scores(captions, attrs: dict, per_image: bool = False) -> dict:
    """How often captions name the right objects of nsd-sim scenes (one caption per row of ``attrs``).

    With T the true objects of a scene (one or two (colour, shape) pairs) and N those the
    caption names (:func:`caption_objects`), compared as multisets:

    ``objects``  N == T: every object named with its shape *and* colour, bound together, and no
                 other object (the headline figure; for two-object scenes both must be right,
                 in either order);
    ``shape``    the shapes of N == the shapes of T;
    ``colour``   the colours of N == the colours of T;
    ``count``    |N| == |T|;
    ``size``     of the objects in N ∩ T named with a size word, the fraction whose size is right
                 (``nan`` when none is);
    ``object_recall``  the fraction of all true objects that appear in N.

    ``objects``, ``shape``, ``colour`` and ``count`` are also given per number of objects
    (``..._1obj``, ``..._2obj``). Returns fractions and ``n``; with ``per_image`` also
    ``rows``: the (n,) bool array of each of ``objects``, ``shape``, ``colour``, ``count``.
    """
    from collections import Counter


    captions = list(captions)
    n = len(captions)
    if n != len(attrs["n_objects"]):
        raise InputError(f"{n} captions for {len(attrs['n_objects'])} scenes")
    rows: dict[str, list] = {k: [] for k in ("objects", "shape", "colour", "count")}
    n_obj = np.asarray(attrs["n_objects"], int)
    size_right, size_named, recalled, total = 0, 0, 0, 0
    for i, cap in enumerate(captions):
        named = caption_objects(cap)
        truth = [(sc.COLOURS[int(attrs[f"colour{k}"][i])], sc.SHAPES[int(attrs[f"shape{k}"][i])],
                  sc.SIZES[int(attrs[f"size{k}"][i])]) for k in range(1, n_obj[i] + 1)]
        N = Counter((c, s) for c, s, _ in named)
        T = Counter((c, s) for c, s, _ in truth)
        rows["objects"].append(N == T)
        rows["shape"].append(Counter(s for _, s, _ in named) == Counter(s for _, s, _ in truth))
        rows["colour"].append(Counter(c for c, _, _ in named) == Counter(c for c, _, _ in truth))
        rows["count"].append(len(named) == len(truth))
        total += len(truth)
        recalled += sum((N & T).values())
        sizes: dict[tuple, list] = {}
        for c, s, z in truth:
            sizes.setdefault((c, s), []).append(z)
        for c, s, z in named:
            left = sizes.get((c, s))
            if z is not None and left:
                size_named += 1
                size_right += int(z in left)
                left.remove(z if z in left else left[0])
    out: dict[str, float] = {"n": n}
    for k, v in rows.items():
        v = np.asarray(v, bool)
        out[k] = float(v.mean()) if n else math.nan
        for m in (1, 2):
            sel = n_obj == m
            out[f"{k}_{m}obj"] = float(v[sel].mean()) if sel.any() else math.nan
    out["size"] = size_right / size_named if size_named else math.nan
    out["object_recall"] = recalled / total if total else math.nan
    if per_image:
        out["rows"] = {k: np.asarray(v, bool) for k, v in rows.items()}
    return out
