"""nsd-sim: a simulated NSD in the real layout with a known ground truth, and its own models.

Two halves, at two places of the import order (``tests/unit/test_layout.py``):

- the world, beside :mod:`braindecode_pkg.data`: :mod:`.world` (the simulator writing an NSD
  root and ``sim_truth/``), :mod:`.scenes` (the procedural stimuli and their captions),
  :mod:`.attributes` (which objects a caption names), :mod:`.arch` (the nsd-sim CLIP's
  architecture) and :mod:`.shipped` (where the shipped models lie).
- :mod:`.recipes`: how the world's models (CLIP, image decoder, captioner) are trained, and the
  chain of runs behind the shipped weights. They train :mod:`braindecode_pkg.decoders` models
  and score them with :mod:`braindecode_pkg.evaluate`, so they sit after both; nothing in the
  pipeline's stages imports them.

May import: the world, :mod:`braindecode_pkg.data` and the core modules (``errors``, ``io``); the
recipes, also the decoders and evaluate (see :mod:`.recipes`).
"""
