"""Evaluation: retrieval, the nsd-sim oracle, the image and caption metric battery, bootstrap CIs.

- :mod:`.retrieval`: top-1 retrieval among random candidates, brain→image and image→brain.
- :mod:`.oracle`: nsd-sim's oracle (the generating model's own likelihood).
- :mod:`.images`: PixCorr, SSIM, two-way identification and correlation distance of feature
  nets (AlexNet 2/5, InceptionV3, EfficientNet-B1, SwAV; local weights only), CLIP features,
  per image, following MindEye2's protocol, through a chosen image chain (MindEye's or one
  antialiased resize).
- :mod:`.judge`: the judge CLIP that scores two-way CLIP and CLIP-S, never the decoding CLIP.
- :mod:`.captions`: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap), CLIP-S, and nsd-sim's
  attribute accuracy, per caption.
- :mod:`.bootstrap`: percentile bootstrap intervals of per-item metrics, across subjects too.
- :mod:`.score` scores one (method, subject) into a part file; :mod:`.collect` gathers the parts
  into ``metrics.tsv`` with bootstrap intervals.

May import: every earlier stage's readers (``embed``, ``brain``, ``decode``), the decoders (the
judging CLIP), the world half of :mod:`braindecode_pkg.sim` (attributes, the oracle's truth) and
the core modules; never the report.
"""
