"""nsd-sim's caption attribute score: which objects a caption names, against the scene's truth."""

from __future__ import annotations

import numpy as np

from braindecode_pkg.sim import scenes as sc
from braindecode_pkg.sim.attributes import caption_objects, sim_attribute_scores
from braindecode_pkg.sim.recipes import clip as train_clip


def _table(rows):
    """An attribute table from (n_objects, [(colour, shape, size)...]) rows."""
    n = len(rows)
    t = {"n_objects": np.array([len(r) for r in rows], np.int8)}
    for k in (1, 2):
        for name, table in (("colour", sc.COLOURS), ("shape", sc.SHAPES), ("size", sc.SIZES)):
            j = {"colour": 0, "shape": 1, "size": 2}[name]
            t[f"{name}{k}"] = np.array([table.index(r[k - 1][j]) if len(r) >= k else -1 for r in rows], np.int8)
    assert len(t["colour1"]) == n
    return t


def test_attribute_score_by_hand():
    attrs = _table([[("red", "circle", "small")], [("blue", "star", "large"), ("green", "ring", "medium")]])
    assert caption_objects("A tiny red circle against a blue sky.") == [("red", "circle", "small")]
    assert caption_objects("Green grass with a huge blue star.") == [("blue", "star", "large")]
    perfect = sim_attribute_scores(
        ["A small red circle on green grass.", "A green ring to the left of a big blue star."], attrs)
    assert perfect["objects"] == perfect["shape"] == perfect["colour"] == perfect["count"] == 1.0
    assert perfect["size"] == 1.0 and perfect["object_recall"] == 1.0
    s = sim_attribute_scores(
        ["A large red square on a blue sky.",            # colour right, shape wrong, size wrong
         "Two shapes: a blue ring and a green star."],   # both colours and shapes, bound wrongly
        attrs)
    assert s["objects"] == 0.0 and s["colour"] == 1.0 and s["count"] == 1.0
    assert s["shape"] == 0.5 and s["shape_2obj"] == 1.0 and s["shape_1obj"] == 0.0
    assert s["object_recall"] == 0.0
    assert np.isnan(s["size"])  # sizes are scored on correctly named objects only: none here
    s = sim_attribute_scores(["A large red circle.", "A tiny blue star and a medium green ring."], attrs)
    assert s["objects"] == 1.0 and s["size"] == 1 / 3  # large/small, tiny/large wrong; medium right
    one = sim_attribute_scores(["A blue star.", "A blue star."], attrs)  # misses the second object
    assert one["objects_2obj"] == 0.0 and one["count_2obj"] == 0.0 and one["object_recall"] == 1 / 3


def test_reference_captions_score_one():
    attrs, caps = train_clip.draw_scenes(5, 2, 300, 5)
    for j in range(5):
        s = sim_attribute_scores([c[j] for c in caps], attrs)
        assert s["objects"] == s["shape"] == s["colour"] == s["count"] == s["size"] == 1.0
