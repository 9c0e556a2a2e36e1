"""Brain embeddings of every test image of a subject (or of its validation images), under both
test protocols.

``avg_betas``    average the betas of an image's repeats, then one forward pass (MindEye's protocol)
``avg_outputs``  one forward pass per trial, then average the outputs of the repeats

Written per subject and method as one HDF5 file keyed by sorted ``nsd_id``:

========================  ====================  ============================================
dataset                   shape                 content
========================  ====================  ============================================
``nsd_id``                (n,) int64            the subject's test (shared1000) images, sorted
``n_repeats``             (n,) int64            trials averaged per image
``<protocol>/pooled``     (n, d) float32        predicted CLIP pooled embedding (if the model has it)
``<protocol>/tokens``     (n, T, W) float32     predicted CLIP patch tokens
``<protocol>/latent``     (n, c, h, w) float32  predicted VAE latent (low-level head)
``<protocol>/prior``      like the prior target  diffusion-prior samples (``--prior``; brain models)
========================  ====================  ============================================

Attributes: ``subject``, ``method``, ``model`` (path), ``model_kind``, ``prep``, ``protocols``
(JSON descriptions), ``sessions`` (sessions the trials come from), ``prior_seed``,
``prior_sampling`` (JSON: the prior's DDIM ``steps`` and classifier-free ``guidance`` used; the
model's own unless overridden, e.g. to choose them on the validation images), ``split``
(``test``, the shared images; or ``val``, the subject's validation images, every trial of them
left out of training by ``--validation``: what every choice is made on).
``true_embedding`` writes a file of the same layout whose "predictions" are the stimuli's own
CLIP embeddings (the embed stage's, every head it holds, identical under both protocols): fed to
the decoders, it gives the decoder stack's ceiling (method ``true_embedding``).

Models are a brain model directory (:class:`~.model.BrainModel`) or a ridge model
directory (:class:`~.ridge.RidgeModel`), told apart by ``config.json``'s ``kind``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["infer", "true_embedding", "read_model_config", "load_any_model", "predict", "PROTOCOLS"]

PROTOCOLS = {
    "avg_betas": "betas of an image's repeats averaged, then one forward pass",
    "avg_outputs": "one forward pass per trial, outputs of the repeats averaged",
}


def read_model_config(model_dir) -> dict:
    """The ``config.json`` of a brain or ridge model directory (its ``kind`` tells them apart)."""
    f = Path(model_dir) / "config.json"
    if not f.is_file():
        raise InputError(f"{f}: model config not found (a model directory holds config.json and model.safetensors)")
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{f}: not a model config ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{f}: not a model config")
    return doc


def load_any_model(model_dir):
    """``(kind, model)``: ``"brain"`` → BrainModel (eval mode) or ``"ridge"`` → RidgeModel."""
    from . import ridge
    from . import model as brain

    d = Path(model_dir)
    cfg = d / "config.json"
    kind = read_model_config(d).get("kind")
    if kind == brain.MODEL_KIND:
        return "brain", brain.BrainModel.from_pretrained(d).eval()
    if kind == ridge.MODEL_KIND:
        return "ridge", ridge.RidgeModel.from_pretrained(d)
    raise InputError(f"{cfg}: unknown model kind {kind!r}; expected {brain.MODEL_KIND!r} or {ridge.MODEL_KIND!r}")


def predict(kind: str, model, subject: str, x: np.ndarray, *, batch_size: int = 512, prior: bool = False,
            prior_seed: int = 0, prior_sampling: dict | None = None) -> dict:
    """Head outputs ``{head: (n, ...)}`` for betas ``x`` (n, V) of ``subject`` (a brain model runs
    on the device its parameters are on)."""
    if kind == "ridge":
        if model.subject != subject:
            raise InputError(f"the ridge model is {model.subject}'s, not {subject}'s")
        return model.predict(x)
    import torch

    dev = next(model.parameters()).device
    out: dict[str, list] = {}
    with torch.no_grad():
        for a in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[a:a + batch_size], np.float32)).to(dev)
            o = model({subject: xb})
            for h in model.config.heads:
                out.setdefault(h, []).append(o[h].float().cpu().numpy())
    res = {h: np.concatenate(v) for h, v in out.items()}
    if prior:
        res["prior"] = _prior(model, res, prior_seed, batch_size, prior_sampling)
    return res


def prior_sampling_used(model, over: dict | None = None) -> dict:
    """The prior's sampling settings: the model's ``sample_steps`` and ``guidance``, with ``over``
    (``steps``, ``guidance``; ``None`` values keep the model's) on top."""
    if model.prior is None:
        raise InputError("--prior: this model has no diffusion prior")
    over = {k: v for k, v in (over or {}).items() if v is not None}
    bad = sorted(set(over) - {"steps", "guidance"})
    if bad:
        raise InputError(f"prior sampling option(s) {bad}: expected steps and/or guidance")
    out = {"steps": int(over.get("steps", model.prior.sample_steps)),
           "guidance": float(over.get("guidance", model.prior.guidance))}
    if out["steps"] < 1:
        raise InputError(f"prior sampling steps {out['steps']}: must be >= 1")
    return out


def _prior(model, res: dict, seed: int, batch_size: int, sampling: dict | None = None) -> np.ndarray:
    import torch

    kw = prior_sampling_used(model, sampling)
    t = model.config.prior["target"]
    cond = res[t].reshape(len(res[t]), -1)
    outs = []
    with torch.no_grad():
        for a in range(0, len(cond), batch_size):
            c = torch.from_numpy(np.ascontiguousarray(cond[a:a + batch_size])).to(next(model.parameters()).device)
            outs.append(model.sample_prior({t: c}, seed=seed * 1_000_003 + a, **kw).cpu().numpy())
    return np.concatenate(outs)


def _trials(prep, subject, split: str, validation):
    """The trials predicted: every trial of the test images, or of the validation images (of every
    session, whatever sessions the model trained on, as for the test images)."""
    from .data import load_subject

    if split not in ("test", "val"):
        raise InputError(f"split {split!r}: expected 'test' or 'val'")
    return load_subject(prep, split=split, sessions="all", subject=subject,
                        validation=validation if split == "val" else None)


def infer(model_dir, prep, out, *, subject=None, method: str | None = None, protocols=tuple(PROTOCOLS),
          prior: bool = False, prior_seed: int = 0, prior_sampling: dict | None = None, batch_size: int = 512,
          threads: int | None = None, device: str = "cpu", split: str = "test", validation=None) -> Path:
    """Write the embeddings file ``out`` (see the module docstring) of the test images, or
    (``split="val"``) of the validation images (``validation``); return its path.
    A brain model runs on ``device`` (a ridge model always on the CPU)."""
    from .data import test_groups

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise InputError(f"protocols {list(protocols)}: expected some of {list(PROTOCOLS)}")
    kind, model = load_any_model(model_dir)
    if kind == "brain":
        model.to(device)
    tr = _trials(prep, subject, split, validation)
    if kind == "brain":
        import torch

        model.check_input(tr.key, torch.zeros(1, tr.n_voxels, device=device))
    ids, groups = test_groups(tr)
    method = method or Path(model_dir).name
    results = {}
    for p in protocols:
        if p == "avg_betas":
            x = np.stack([tr.betas[g].mean(0) for g in groups])
            results[p] = predict(kind, model, tr.key, x, batch_size=batch_size, prior=prior, prior_seed=prior_seed,
                                 prior_sampling=prior_sampling)
        else:
            per = predict(kind, model, tr.key, tr.betas, batch_size=batch_size)
            avg = {h: np.stack([v[g].mean(0) for g in groups]) for h, v in per.items()}
            if prior and kind == "brain":
                avg["prior"] = _prior(model, avg, prior_seed, batch_size, prior_sampling)
            results[p] = avg
    _write(out, ids, groups, results, subject=tr.key, method=method, model=str(model_dir), kind=kind, prep=prep,
           protocols=protocols, sessions=tr.session, prior_seed=prior_seed, split=split,
           prior_sampling=prior_sampling_used(model, prior_sampling) if prior and kind == "brain" else None)
    return Path(out)


def true_embedding(prep, embed, out, *, subject=None, protocols=tuple(PROTOCOLS), latent=None, split: str = "test",
                   validation=None) -> Path:
    """Write ``out`` (the infer layout) with the true CLIP embeddings of the subject's test images
    (or validation images, as for :func:`infer`), and their true VAE latents from the ``latent``
    file when given."""
    from .data import load_targets, test_groups

    tr = _trials(prep, subject, split, validation)
    ids, groups = test_groups(tr)
    targets = load_targets(embed, heads="available", latent=latent, ids=ids)
    rows = targets.rows(ids)
    true = {h: np.asarray(a[rows], np.float32) for h, a in targets.arrays.items()}
    results = {p: dict(true) for p in protocols}
    _write(out, ids, groups, results, subject=tr.key, method="true_embedding", model=str(embed),
           kind="true_embedding", prep=prep, protocols=protocols, sessions=tr.session, prior_seed=0, split=split)
    return Path(out)


def _write(out, ids, groups, results, *, subject, method, model, kind, prep, protocols, sessions, prior_seed,
           split="test", prior_sampling=None):
    import h5py

    from ..io import atomic_path

    with atomic_path(Path(out)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("nsd_id", data=ids.astype(np.int64), track_times=False)
        f.create_dataset("n_repeats", data=np.array([len(g) for g in groups], np.int64), track_times=False)
        for p, res in results.items():
            grp = f.create_group(p, track_order=True)
            for h, v in res.items():
                grp.create_dataset(h, data=v.astype(np.float32), track_times=False)
        a = f.attrs
        a["subject"] = subject
        a["method"] = method
        a["model"] = model
        a["model_kind"] = kind
        a["prep"] = str(prep)
        a["protocols"] = json.dumps({p: PROTOCOLS[p] for p in protocols})
        a["sessions"] = np.unique(sessions).astype(np.int64)
        a["prior_seed"] = int(prior_seed)
        if prior_sampling is not None:
            a["prior_sampling"] = json.dumps(prior_sampling)
        if split != "test":
            a["split"] = split
