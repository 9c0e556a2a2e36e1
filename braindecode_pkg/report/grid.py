"""The decode folders and the image grid.

A decode folder ``results/decode/{method}/subjAA/`` holds ``images/{nsd_id:05d}.png``
(reconstructions; required), optionally ``blurry/{nsd_id:05d}.png``, ``captions.tsv`` (columns
``nsd_id``, ``caption``) and ``decode.h5`` (``nsd_id`` (n,) int64, ``retrieved`` (n, 5) int64: the
top-5 retrieved test images; attributes ``n_reconstructed`` and the recipe that made the images,
:func:`braindecode_pkg.decode.read_recipe`, shown above each method's grid).
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..decode import read_recipe, recipe_text
from ..errors import InputError
from ..evaluate.collect import method_label
from .metrics import method_sort_key
from .page import Markup, h, img, join, thumbnail_png

__all__ = ["DecodeDir", "read_decode_dir", "find_decode_dirs", "method_label", "Stimuli", "grid_section"]

_IMG = re.compile(r"^(\d+)\.png$")
_SUBJ = re.compile(r"^subj\d{2,}$")


@dataclasses.dataclass
class DecodeDir:
    path: Path
    nsd_ids: np.ndarray                  # sorted
    retrieved: dict | None               # nsd_id → top-5 retrieved nsd ids
    captions: dict | None                # nsd_id → predicted caption
    has_blurry: bool
    reconstructed: np.ndarray | None = None  # the nsd ids with a reconstruction (decode.max_images)
    recipe: dict | None = None  # what made them (decode.read_recipe), when the folder has decode.h5

    def __post_init__(self):
        if self.reconstructed is None:
            self.reconstructed = self.nsd_ids

    def image(self, nsd_id: int) -> Path:
        p = self.path / "images" / f"{int(nsd_id):05d}.png"
        if not p.is_file():
            raise InputError(f"{p}: reconstruction not found")
        return p

    def blurry(self, nsd_id: int) -> Path | None:
        p = self.path / "blurry" / f"{int(nsd_id):05d}.png"
        return p if p.is_file() else None


def find_decode_dirs(root) -> dict[tuple[str, str], Path]:
    """``{(method, subject): folder}`` for every ``root/{folder}/subjAA/`` that has an ``images/``
    folder, with ``method`` the metrics table's name of ``folder`` (:func:`method_label`)."""
    root = Path(root)
    out = {}
    if root.is_dir():
        for m in sorted(p for p in root.iterdir() if p.is_dir()):
            for s in sorted(p for p in m.iterdir() if p.is_dir() and _SUBJ.match(p.name)):
                if (s / "images").is_dir():
                    out[(method_label(m.name), s.name)] = s
    return out


def _read_captions(path: Path) -> dict:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            r = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            if not {"nsd_id", "caption"} <= set(r.fieldnames or []):
                raise InputError(f"{path}: expected columns nsd_id and caption, got {r.fieldnames}")
            out = {}
            for i, d in enumerate(r, start=2):
                try:
                    out[int(d["nsd_id"])] = d["caption"] or ""
                except (TypeError, ValueError):
                    raise InputError(f"{path}, line {i}: nsd_id {d['nsd_id']!r} is not an integer") from None
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read predicted captions ({e})") from None


def read_decode_dir(path) -> DecodeDir:
    """Index one decode folder (images are read later, only those shown)."""
    import h5py

    d = Path(path)
    imgs = d / "images"
    if not imgs.is_dir():
        raise InputError(f"{imgs}: reconstructions folder not found (written by `braindecode-pkg decode`)")
    retrieved = recipe = None
    h5 = d / "decode.h5"
    if h5.is_file():
        recipe = read_recipe(d)
        try:
            with h5py.File(h5, "r") as f:
                ids = np.asarray(f["nsd_id"][()], np.int64)
                if "n_reconstructed" not in f.attrs:
                    raise InputError(f"{h5}: no n_reconstructed attribute (how many test images have "
                                     f"reconstructions); decode it again with this version")
                done = ids[:int(f.attrs["n_reconstructed"])]
                if "retrieved" in f:
                    r = np.asarray(f["retrieved"][()], np.int64)
                    if r.ndim != 2 or len(r) != len(ids):
                        raise InputError(f"{h5}: retrieved has shape {r.shape}, expected ({len(ids)}, k)")
                    retrieved = {int(i): r[j].tolist() for j, i in enumerate(ids)}
        except KeyError as e:
            raise InputError(f"{h5}: missing dataset {e}") from None
        except OSError as e:
            raise InputError(f"{h5}: not a readable HDF5 file ({e})") from None
    else:
        ids = np.array([int(m.group(1)) for p in imgs.iterdir() if (m := _IMG.match(p.name))], np.int64)
        done = ids
    if not len(ids):
        raise InputError(f"{imgs}: no reconstructions ({{nsd_id:05d}}.png) found")
    caps = _read_captions(d / "captions.tsv") if (d / "captions.tsv").is_file() else None
    return DecodeDir(d, np.unique(ids), retrieved, caps, (d / "blurry").is_dir(), np.unique(done), recipe)


class Stimuli:
    """The shown images by nsd id: from NSD's ``nsd_stimuli.hdf5`` (``imgBrick``), or a callable
    ``ids (sorted unique int64) → (n, S, S, 3) uint8``."""

    def __init__(self, source: str | Path | Callable | None):
        self.source = source
        self._cache: dict[int, np.ndarray] = {}
        if source is not None and not callable(source) and not Path(source).is_file():
            raise InputError(f"{source}: stimulus file not found (NSD's nsd_stimuli.hdf5)")

    @property
    def available(self) -> bool:
        return self.source is not None

    def load(self, ids) -> None:
        ids = np.unique(np.asarray([i for i in ids if int(i) not in self._cache], np.int64))
        if not len(ids) or self.source is None:
            return
        if callable(self.source):
            arr = np.asarray(self.source(ids))
        else:
            import h5py

            from ..embed.stimuli import read_rows

            try:
                with h5py.File(self.source, "r") as f:
                    ds = f["imgBrick"]
                    if ids[0] < 0 or ids[-1] >= ds.shape[0]:
                        raise InputError(f"{self.source}: nsd ids {ids[0]}..{ids[-1]} outside imgBrick's {ds.shape[0]} images")
                    arr = read_rows(ds, ids)
            except KeyError:
                raise InputError(f"{self.source}: no dataset 'imgBrick'") from None
            except OSError as e:
                raise InputError(f"{self.source}: not a readable HDF5 file ({e})") from None
        if arr.shape[0] != len(ids) or arr.ndim != 4:
            raise InputError(f"stimuli: expected ({len(ids)}, S, S, 3) images, got {arr.shape}")
        for i, a in zip(ids.tolist(), arr):
            self._cache[int(i)] = a

    def __getitem__(self, nsd_id: int) -> np.ndarray:
        return self._cache[int(nsd_id)]


def grid_section(decode_dirs: dict, stimuli: Stimuli, true_captions: dict | None, max_grid: int,
                 thumb: int = 160, retr_thumb: int = 56) -> tuple[Markup, list[str], int]:
    """Per method, up to ``max_grid`` rows (the first sorted nsd ids of the first subject, in sorted
    order, that has the method): nsd id | stimulus | blurry | reconstruction | retrieved top-5 |
    predicted caption | true captions; columns that a method lacks are left out. Returns the HTML,
    notes, and the number of ``<img>`` it holds."""
    notes = []
    if not decode_dirs:
        return join(), ["No decode folders were given: no image grid."], 0
    if max_grid <= 0:
        return join(), ["max_grid = 0: no image grid."], 0
    if not stimuli.available:
        notes.append("No stimulus images were given: the seen-image and retrieved-image columns are omitted.")
    if not true_captions:
        notes.append("No true captions were given: that column is omitted.")
    methods = sorted({m for m, _ in decode_dirs}, key=method_sort_key)
    chosen = []
    for m in methods:
        subj = sorted(s for mm, s in decode_dirs if mm == m)[0]
        dd = read_decode_dir(decode_dirs[(m, subj)])
        chosen.append((m, subj, dd, dd.reconstructed[:max_grid].tolist()))
    need = set()
    for _, _, dd, ids in chosen:
        need.update(ids)
        if dd.retrieved is not None:
            for i in ids:
                need.update(dd.retrieved.get(i, []))
    if stimuli.available:
        stimuli.load(sorted(need))
    cache: dict[tuple[int, int], bytes] = {}

    def stim(i: int, size: int) -> bytes:
        key = (int(i), size)
        if key not in cache:
            cache[key] = thumbnail_png(stimuli[i], size)
        return cache[key]

    out, n_img = [], 0
    for m, subj, dd, ids in chosen:
        show_retr = stimuli.available and dd.retrieved is not None
        head = [h("th", "nsd id")]
        if stimuli.available:
            head.append(h("th", "seen image"))
        if dd.has_blurry:
            head.append(h("th", "blurry"))
        head.append(h("th", "reconstruction"))
        if show_retr:
            head.append(h("th", "retrieved (top-5)"))
        head.append(h("th", "predicted caption"))
        if true_captions:
            head.append(h("th", "true captions"))
        rows = [h("tr", head)]
        for i in ids:
            cells = [h("td", f"{i}", class_="num")]
            if stimuli.available:
                cells.append(h("td", img(stim(i, thumb), f"seen image {i}", width=thumb)))
                n_img += 1
            if dd.has_blurry:
                b = dd.blurry(i)
                if b is None:
                    cells.append(h("td", "—"))
                else:
                    cells.append(h("td", img(thumbnail_png(b, thumb), f"blurry reconstruction {i}", width=thumb)))
                    n_img += 1
            cells.append(h("td", img(thumbnail_png(dd.image(i), thumb), f"reconstruction {i}", width=thumb)))
            n_img += 1
            if show_retr:
                got = dd.retrieved.get(i)
                if got is None:
                    cells.append(h("td", "—"))
                else:
                    spans = [h("span", img(stim(r, retr_thumb), f"retrieved {r}", title=f"nsd id {r}", width=retr_thumb),
                               class_="retr hit" if r == i else "retr") for r in got]
                    cells.append(h("td", spans))
                    n_img += len(got)
            cap = None if dd.captions is None else dd.captions.get(i)
            cells.append(h("td", "—" if cap is None else cap, class_="text"))
            if true_captions:
                tc = true_captions.get(i) or []
                cells.append(h("td", h("ul", [h("li", c) for c in tc], class_="captions") if tc else "—",
                               class_="text"))
            rows.append(h("tr", cells))
        title = f"{m} — {subj} (first {len(ids)} of {len(dd.nsd_ids)} test images)"
        missing = []
        if not dd.has_blurry:
            missing.append("no blurry reconstructions")
        if dd.captions is None:
            missing.append("no predicted captions")
        if dd.retrieved is None:
            missing.append("no retrieval results (decode.h5)")
        out.append(h("h3", h("code", m), f" — {subj}"))
        out.append(h("p", title + (": " + "; ".join(missing) if missing else "") + ".", class_="note"))
        if dd.recipe is not None:
            out.append(h("p", "Decoded from: " + recipe_text(dd.recipe) + ".", class_="note recipe"))
        out.append(h("div", h("table", rows, class_="grid"), class_="scroll"))
    if any(dd.retrieved is not None for _, _, dd, _ in chosen) and stimuli.available:
        notes.append("Retrieved images: a green frame marks the seen image among the top five.")
    return join(out), notes, n_img
