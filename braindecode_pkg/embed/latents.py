"""Low-level targets: the image decoder's VAE latents of every shown image (the brain model's
``latent`` head learns them; decoding their prediction gives the blurry image img2img starts from).

``latent.h5``: ``nsd_id`` (n,) int64 sorted, ``latent`` (n, c, h, w) float32 — the unscaled
posterior mean of the decoder's ``AutoencoderKL`` for the stimulus resized to the decoder's native
size; attributes ``image_decoder`` (JSON), ``subjects``. Written under a temporary name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["embed_latents"]


def embed_latents(nsd_root, subjects, out, *, image_decoder="sim", sim_dir=None, sessions="all",
                  batch_size: int = 64, decoder=None, device: str = "cpu") -> Path:
    """Write ``out`` (see the module docstring) for every image shown to ``subjects``; the VAE runs
    on ``device``."""
    import h5py

    from ..data.layout import NSDPaths
    from ..data.stimuli import check_image_brick
    from .stimuli import read_rows, shown_images
    from ..io import atomic_path
    from ..decoders.image_decoder import ImageDecoder

    root = Path(nsd_root)
    if not root.is_dir():
        raise InputError(f"{root}: NSD root not found")
    paths = NSDPaths(root)
    check_image_brick(paths.stimuli)
    ids = shown_images(paths, sorted({int(s) for s in subjects}), sessions)
    check_image_brick(paths.stimuli, ids)
    dec = decoder or ImageDecoder.load(image_decoder, sim_dir=sim_dir, device=device)
    chunks = []
    with h5py.File(paths.stimuli, "r") as f:
        for a in range(0, len(ids), 512):
            chunks.append(dec.encode_latents(read_rows(f["imgBrick"], ids[a:a + 512]), batch_size=batch_size))
    lat = np.concatenate(chunks) if chunks else np.zeros((0, 4, 1, 1), np.float32)
    with atomic_path(Path(out)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("nsd_id", data=ids, track_times=False)
        f.create_dataset("latent", data=lat.astype(np.float32), track_times=False)
        f.attrs["image_decoder"] = json.dumps(dec.describe(), default=str)
        f.attrs["subjects"] = json.dumps(sorted({int(s) for s in subjects}))
    return Path(out)
