"""The embed stage: what the brain model is trained to predict, for every shown image.

:mod:`.stimuli` (CLIP image embeddings, pooled and patch tokens, and caption embeddings, in one
HDF5 keyed by ``nsd_id``, resumable batch by batch; and the readers every later stage uses:
``read_rows``, ``verify_embeddings``, ``contiguous_memmap``) and :mod:`.latents` (the image
decoder's VAE latents, the low-level head's targets).

May import: :mod:`braindecode_pkg.data` (which images were shown), :mod:`braindecode_pkg.decoders`
(the encoders) and the core modules.
"""
