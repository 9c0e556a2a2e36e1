"""The recipes of nsd-sim's own models, run only by whoever retrains the shipped weights.

:mod:`.clip` (an open_clip CLIP on procedural scenes and captions), :mod:`.image_decoder` (a tiny
Stable unCLIP pipeline), :mod:`.captioner` (a ClipCap mapper and its GPT-2), :mod:`.chain` (the
chain of runs behind ``sim/weights/nsd-sim-1.0``, resumable, with its manifest ``stages.json``)
and :mod:`.progress` (progress bars and time budgets shared by the three trainers).

May import: the world half of :mod:`braindecode_pkg.sim`, :mod:`braindecode_pkg.data`,
:mod:`braindecode_pkg.decoders` (the models they train, saved in the formats real checkpoints
use) and :mod:`braindecode_pkg.evaluate` (the held-out scores). Imported only by the CLI and the
workflow's planning.
"""
