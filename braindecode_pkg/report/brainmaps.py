"""Per-voxel importance of a subject's decoder, put back into the subject's volume.

* brain model (``config.json`` kind ``braindecode_pkg.brain`` + ``model.safetensors``): the
  subject's adapter starts with ``Linear(V, width_or_rank)`` stored as
  ``adapters.<subject_key>.linear.weight`` of shape (width_or_rank, V); voxel v's importance is the
  norm of column v, ``||W[:, v]||``. A ``pool`` adapter first max-pools the voxel vector, so it has
  no per-voxel weights: :func:`adapter_importance` returns ``None`` for it.
* ridge model (kind ``braindecode_pkg.ridge``): ``<head>.coef`` of shape (V, D) per head; voxel v's
  importance is the norm of row v over the chosen head(s).

The geometry comes from the preprocess output ``results/prep/subjAA.h5`` (``voxel_ijk``; attributes
``affine``, ``volume_shape``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..brain.infer import read_model_config

__all__ = ["voxel_volume", "adapter_importance", "prep_geometry", "brain_map_entry"]


def voxel_volume(values, voxel_ijk, volume_shape, affine, fill: float = 0.0):
    """A :class:`nibabel.Nifti1Image` of ``volume_shape`` with ``values[v]`` at ``voxel_ijk[v]`` and
    ``fill`` (0 by default; NaN also works) everywhere else, with the subject's ``affine``."""
    import nibabel as nib

    values = np.asarray(values, np.float64).reshape(-1)
    ijk = np.asarray(voxel_ijk)
    shape = tuple(int(s) for s in np.asarray(volume_shape).reshape(-1))
    aff = np.asarray(affine, np.float64)
    if len(shape) != 3:
        raise InputError(f"volume_shape {shape}: expected 3 dimensions")
    if aff.shape != (4, 4):
        raise InputError(f"affine of shape {aff.shape}: expected (4, 4)")
    if ijk.ndim != 2 or ijk.shape[1] != 3 or not np.issubdtype(ijk.dtype, np.integer):
        raise InputError(f"voxel_ijk of shape {ijk.shape} and dtype {ijk.dtype}: expected integer (V, 3)")
    if len(ijk) != len(values):
        raise InputError(f"{len(values)} values for {len(ijk)} voxels (voxel_ijk)")
    if len(ijk) and ((ijk < 0).any() or (ijk >= np.asarray(shape)).any()):
        raise InputError(f"voxel_ijk has indices outside the volume {shape}")
    vol = np.full(shape, fill, np.float32)
    vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
    img = nib.Nifti1Image(vol, aff)
    img.header.set_sform(aff, code=1)
    img.header.set_qform(aff, code=1)
    return img


def adapter_importance(model_dir, subject, head: str | None = None) -> np.ndarray | None:
    """Per-voxel importance (V,) of ``subject`` in a brain or ridge model directory.

    Brain model: the column norms of the subject adapter's first linear weight (``None`` for a
    ``pool`` adapter, which has no per-voxel weights). Ridge model: the row norms of ``<head>.coef``
    (``head=None``: over all heads' columns together). :class:`InputError` if the model has no such
    subject, or the files are missing.
    """
    from safetensors import safe_open

    from ..brain.model import MODEL_KIND as BRAIN_KIND
    from ..brain.model import subject_key
    from ..brain.ridge import MODEL_KIND as RIDGE_KIND

    d = Path(model_dir)
    doc = read_model_config(d)
    key = subject_key(subject)
    w = d / "model.safetensors"
    kind = doc.get("kind")
    if kind == BRAIN_KIND:
        cfg = doc.get("config", {})
        subjects = cfg.get("subjects", {})
        if key not in subjects:
            raise InputError(f"{d}: this brain model has no adapter for {key} (adapters: {sorted(subjects) or 'none'})")
        if cfg.get("adapter", "linear") == "pool":
            return None
        name = f"adapters.{key}.linear.weight"
        if not w.is_file():
            raise InputError(f"{w}: brain model weights not found")
        with safe_open(str(w), framework="pt") as f:
            if name not in f.keys():
                raise InputError(f"{w}: no tensor {name!r} (weights do not match config.json)")
            W = f.get_tensor(name).float().numpy()
        return np.sqrt((W.astype(np.float64) ** 2).sum(0))
    if kind == RIDGE_KIND:
        have = subject_key(doc.get("subject", ""))
        if have != key:
            raise InputError(f"{d}: this ridge model is for {have}, not {key}")
        heads = list(doc.get("heads", {}))
        if head is not None:
            if head not in heads:
                raise InputError(f"{d}: ridge head {head!r} not in this model (heads: {heads})")
            heads = [head]
        if not w.is_file():
            raise InputError(f"{w}: ridge weights not found")
        ss = None
        with safe_open(str(w), framework="numpy") as f:
            for hd in heads:
                c = np.asarray(f.get_tensor(f"{hd}.coef"), np.float64)
                ss = (c ** 2).sum(1) if ss is None else ss + (c ** 2).sum(1)
        if ss is None:
            raise InputError(f"{d}: this ridge model has no heads")
        return np.sqrt(ss)
    raise InputError(f"{d / 'config.json'}: kind {kind!r} is neither {BRAIN_KIND!r} nor {RIDGE_KIND!r}")


def prep_geometry(prep_h5) -> dict:
    """``voxel_ijk``, ``volume_shape``, ``affine`` of a preprocess output ``results/prep/subjAA.h5``."""
    import h5py

    p = Path(prep_h5)
    if not p.is_file():
        raise InputError(f"{p}: preprocessed subject file not found")
    try:
        with h5py.File(p, "r") as f:
            return {"voxel_ijk": f["voxel_ijk"][()], "volume_shape": np.asarray(f.attrs["volume_shape"]),
                    "affine": np.asarray(f.attrs["affine"], np.float64)}
    except KeyError as e:
        raise InputError(f"{p}: missing {e} (expected dataset voxel_ijk, attributes affine and volume_shape)") from None
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None


def brain_map_entry(model_dir, subject, prep_h5, bg_img=None, head: str | None = None) -> dict:
    """One ``brain_maps`` value of :func:`braindecode_pkg.report.build_report`: importance + geometry
    (+ ``bg_img``, e.g. the subject's mean EPI in the same space), or a ``note`` for a pool adapter."""
    from ..brain.ridge import MODEL_KIND as RIDGE_KIND

    values = adapter_importance(model_dir, subject, head=head)
    src = str(Path(model_dir))
    ridge = read_model_config(Path(model_dir)).get("kind") == RIDGE_KIND
    what = ("ridge coefficient norm per voxel" if ridge
            else "adapter weight norm per voxel, ||W[:, v]|| of its first linear layer")
    if values is None:
        return {"note": f"{src}: pool adapter (max-pooling over voxels first): no per-voxel weights to map.",
                "source": src, "what": "pool adapter"}
    geo = prep_geometry(prep_h5)
    if len(values) != len(geo["voxel_ijk"]):
        raise InputError(f"{model_dir}: {len(values)} voxel weights for {subject}, but {prep_h5} has "
                         f"{len(geo['voxel_ijk'])} voxels (another ROI or preprocessing?)")
    return {"values": values, **geo, "bg_img": bg_img, "source": src, "what": what}
