"""Procedural scenes: attributes, pixels that show them, captions that name them."""

from __future__ import annotations

import numpy as np
import pytest

from braindecode_pkg.sim import scenes as sc


@pytest.fixture(scope="module")
def attrs():
    return sc.sample_scenes(np.random.default_rng(123), 400)


def _one(attrs, i, **changes):
    """Row i as a one-row table, with some fields replaced."""
    row = {k: v[i:i + 1].copy() for k, v in attrs.items()}
    for k, v in changes.items():
        row[k][0] = v
    return row


def test_sampling_is_deterministic_and_valid(attrs):
    again = sc.sample_scenes(np.random.default_rng(123), 400)
    assert attrs.keys() == again.keys() and all(np.array_equal(attrs[k], again[k], equal_nan=True) for k in attrs)
    other = sc.sample_scenes(np.random.default_rng(124), 400)
    assert not np.array_equal(attrs["shape1"], other["shape1"])
    n2 = attrs["n_objects"] == 2
    assert set(np.unique(attrs["n_objects"])) == {1, 2} and 0.3 < n2.mean() < 0.7
    for k, table in (("shape", sc.SHAPES), ("colour", sc.COLOURS), ("size", sc.SIZES)):
        assert set(np.unique(attrs[f"{k}1"])) == set(range(len(table)))
        assert (attrs[f"{k}2"][~n2] == -1).all() and (attrs[f"{k}2"][n2] >= 0).all()
    assert np.isnan(attrs["x2"][~n2]).all() and np.isfinite(attrs["x2"][n2]).all()
    assert set(np.unique(attrs["background"])) == set(range(len(sc.BACKGROUNDS)))
    for k in (1, 2):
        present = attrs[f"shape{k}"] >= 0
        r, s = attrs[f"radius{k}"][present], attrs[f"size{k}"][present]
        lo = np.array([b[0] for b in sc.SIZE_RADIUS])[s]
        hi = np.array([b[1] for b in sc.SIZE_RADIUS])[s]
        assert ((r >= lo) & (r <= hi)).all()
        for c in ("x", "y"):  # the whole object is inside the image
            v = attrs[f"{c}{k}"][present]
            assert ((v - r >= 0) & (v + r <= 1)).all()
    # camouflage pairs never occur
    for colour, bg in (("green", "grass"), ("blue", "water"), ("black", "night"), ("white", "sky")):
        bad = (attrs["colour1"] == sc.COLOURS.index(colour)) & (attrs["background"] == sc.BACKGROUNDS.index(bg))
        assert not bad.any()


def test_render_is_deterministic_and_shows_the_named_colour(attrs):
    for i in range(60):
        img = sc.render_scene(attrs, i)
        assert img.shape == (425, 425, 3) and img.dtype == np.uint8
        assert np.array_equal(img, sc.render_scene(attrs, i))
        k = int(attrs["n_objects"][i])  # the last object drawn is never covered
        shape = sc.SHAPES[attrs[f"shape{k}"][i]]
        r = float(attrs[f"radius{k}"][i]) * 425
        cx, cy = float(attrs[f"x{k}"][i]) * 425, float(attrs[f"y{k}"][i]) * 425
        if shape == "ring":  # hollow: look on the band
            cx += 0.8 * r
        px = img[int(round(cy)), int(round(cx))]
        assert np.array_equal(px, sc.COLOUR_RGB[attrs[f"colour{k}"][i]]), (i, shape)


def test_attributes_change_pixels(attrs):
    i = int(np.flatnonzero(attrs["n_objects"] == 1)[0])
    base = _one(attrs, i, shape1=sc.SHAPES.index("circle"), colour1=sc.COLOURS.index("red"),
                background=sc.BACKGROUNDS.index("sand"), radius1=0.2, x1=0.5, y1=0.5, angle1=0.0)
    img = sc.render_scene(base, 0)
    red = sc.COLOUR_RGB[sc.COLOURS.index("red")]
    is_red = (img == red).all(-1)
    assert 0.8 * np.pi * 85**2 < is_red.sum() < 1.05 * np.pi * 85**2  # a disc of radius 85 px
    # colour: same mask, other colour
    blue = sc.render_scene(_one(base, 0, colour1=sc.COLOURS.index("blue")), 0)
    assert (blue[is_red] == sc.COLOUR_RGB[sc.COLOURS.index("blue")]).all()
    # shape: at 0.9 r along the x axis the circle is filled, the square (corners on the diagonals) is not
    square = sc.render_scene(_one(base, 0, shape1=sc.SHAPES.index("square")), 0)
    assert (img[212, 212 + 76] == red).all() and not (square[212, 212 + 76] == red).all()
    # position: moved to the top-left
    moved = sc.render_scene(_one(base, 0, x1=0.25, y1=0.25), 0)
    assert (moved[106, 106] == red).all() and not (moved[318, 318] == red).all()
    # background: the corners change, the object does not
    night = sc.render_scene(_one(base, 0, background=sc.BACKGROUNDS.index("night")), 0)
    assert np.abs(night[:40, :40].astype(int) - img[:40, :40].astype(int)).mean() > 100
    assert (night[is_red] == red).all()
    # two objects: the second appears where it is placed
    two = _one(base, 0, n_objects=2, shape2=sc.SHAPES.index("star"), colour2=sc.COLOURS.index("yellow"),
               size2=1, radius2=0.12, x2=0.8, y2=0.8, angle2=0.0)
    img2 = sc.render_scene(two, 0)
    assert (img2[340, 340] == sc.COLOUR_RGB[sc.COLOURS.index("yellow")]).all()


def test_backgrounds_are_smooth_and_distinct(attrs):
    means = {}
    for i in range(120):
        b = sc.BACKGROUNDS[attrs["background"][i]]
        img = sc.render_scene(attrs, i).astype(float)
        corner = img[:30, :30]
        assert np.abs(np.diff(corner, axis=1)).mean() < 3  # smooth, not noisy
        means.setdefault(b, []).append(img[:30, :30].mean((0, 1)))
    centroids = {b: np.mean(v, 0) for b, v in means.items()}
    assert len(centroids) == len(sc.BACKGROUNDS)
    names = list(centroids)
    dists = [np.linalg.norm(centroids[a] - centroids[b]) for a in names for b in names if a < b]
    assert min(dists) > 20


def test_captions_name_every_object(attrs):
    for i in range(80):
        caps = sc.make_captions(attrs, i, np.random.default_rng(i))
        assert len(caps) == 5 and len(set(caps)) >= 4
        assert caps == sc.make_captions(attrs, i, np.random.default_rng(i))
        for k in range(1, int(attrs["n_objects"][i]) + 1):
            shape = sc.SHAPES[attrs[f"shape{k}"][i]]
            colour = sc.COLOURS[attrs[f"colour{k}"][i]]
            assert all(shape in c and colour in c for c in caps), caps
        assert all(c[0].isupper() and c.endswith(".") for c in caps)
        assert not any(" a orange" in c or " a a" in c or "A orange" in c for c in caps)
    assert len(sc.make_captions(attrs, 0, np.random.default_rng(0), n=3)) == 3
    two = int(np.flatnonzero(attrs["n_objects"] == 2)[0])
    assert any("two" in c.lower() for i in (two,) for c in sc.make_captions(attrs, i, np.random.default_rng(1), n=8))


def test_position_words_and_readable(attrs):
    assert sc.position_words(0.1, 0.1) == ("left", "top")
    assert sc.position_words(0.5, 0.5) == ("centre", "middle")
    assert sc.position_words(0.9, 0.7) == ("right", "bottom")
    table = sc.readable(sc.subset(attrs, np.arange(10)))
    assert len(table["shape1"]) == 10 and all(s in sc.SHAPES for s in table["shape1"])
    single = np.flatnonzero(attrs["n_objects"][:10] == 1)
    assert all(table["shape2"][j] == "" and table["position2"][j] == "" for j in single)


def test_shape_twins_change_shapes_and_nothing_else(attrs):
    twin = sc.shape_twins(attrs, np.random.default_rng(5))
    one, two = attrs["n_objects"] == 1, attrs["n_objects"] == 2
    for k, v in attrs.items():  # every other field, NaNs included, is the same
        if k not in ("shape1", "shape2"):
            np.testing.assert_array_equal(twin[k], v)
    assert (twin["shape1"][one] != attrs["shape1"][one]).all() and (twin["shape2"][one] == -1).all()
    assert ((twin["shape1"] >= 0) & (twin["shape1"] < len(sc.SHAPES))).all()
    assert ((twin["shape2"][two] >= 0) & (twin["shape2"][two] < len(sc.SHAPES))).all()
    s1, s2, t1, t2 = (a[two] for a in (attrs["shape1"], attrs["shape2"], twin["shape1"], twin["shape2"]))
    swapped = (t1 == s2) & (t2 == s1) & (s1 != s2)
    # a two-object twin either swaps two different shapes or changes each object's shape
    assert (swapped | ((t1 != s1) & (t2 != s2))).all()
    assert 0 < swapped.sum() < two.sum()
    # the renders differ only where a shape changed; the captions name the twin's shapes
    i = int(np.flatnonzero(one)[0])
    a, b = sc.render_scene(attrs, i), sc.render_scene(twin, i)
    assert (a != b).any() and (a == b).mean() > 0.8
    cap = sc.make_captions(twin, i, np.random.default_rng(0), n=1)[0]
    assert sc.SHAPES[twin["shape1"][i]] in cap and sc.COLOURS[twin["colour1"][i]] in cap
