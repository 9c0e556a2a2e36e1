"""The report's grid shows the test images that have reconstructions (``decode.max_images``), not
every test image of the decode file (the real-path workflow run found a grid asking for the 9th
image of a folder that reconstructed 8)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from braindecode_pkg.decode import DecodeSettings, recipe_attrs
from braindecode_pkg.errors import InputError
from braindecode_pkg.report.grid import Stimuli, grid_section, read_decode_dir


def _folder(d, ids, n, with_attr=True):
    (d / "images").mkdir(parents=True)
    for i in ids[:n]:
        Image.fromarray(np.full((10, 14, 3), i % 255, np.uint8)).save(d / "images" / f"{i:05d}.png")
    with h5py.File(d / "decode.h5", "w") as f:
        f["nsd_id"] = np.asarray(ids, np.int64)
        f.attrs.update(recipe_attrs(DecodeSettings(), "pooled", False))
        if with_attr:
            f.attrs["n_reconstructed"] = n
    return d


def test_grid_rows_are_the_reconstructed_images(tmp_path):
    ids = [3, 8, 21, 40, 57]
    d = _folder(tmp_path / "pretrain" / "subj01", ids, 2)
    dd = read_decode_dir(d)
    assert dd.nsd_ids.tolist() == ids and dd.reconstructed.tolist() == [3, 8]
    html, _, n_img = grid_section({("pretrained", "subj01"): d}, Stimuli(None), None, max_grid=4)
    assert n_img == 2 and "first 2 of 5 test images" in str(html)
    with pytest.raises(InputError, match="n_reconstructed"):
        read_decode_dir(_folder(tmp_path / "old" / "subj01", ids, 2, with_attr=False))
