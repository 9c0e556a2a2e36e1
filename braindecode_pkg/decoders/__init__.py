"""The pretrained models around the brain model: loading and inference only.

:mod:`.clip` (open_clip CLIP encoders: images and captions to embeddings), :mod:`.image_decoder`
(a diffusers Stable unCLIP pipeline: CLIP image embeddings to images) and :mod:`.captioner` (a
ClipCap mapper with a causal language model: CLIP embeddings to captions), each chosen by a
config (``"sim"``, a local folder or a JSON spec; :mod:`.spec` parses them). Real and nsd-sim
weights load through the same code; nothing is downloaded or unpickled.

The embed stage encodes stimuli with them and decode turns brain predictions into images and
captions; how nsd-sim's own are trained lives in :mod:`braindecode_pkg.sim.recipes`.

May import: :mod:`braindecode_pkg.data`, the world half of :mod:`braindecode_pkg.sim` (the
nsd-sim CLIP's architecture, the shipped weights' folder) and the core modules.
"""
