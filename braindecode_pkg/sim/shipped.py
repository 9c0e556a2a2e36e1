"""The nsd-sim models shipped with the package: where they lie and the world version they belong to.

``weights/nsd-sim-1.0/`` beside this file holds ``clip/``, ``image_decoder/`` and ``captioner/``
(what the model config ``"sim"`` loads when no trained folder is given), their README with every
recipe and figure, and ``stages.json``, the manifest of the training chain that made them
(:mod:`.recipes.chain`). The models are versioned with the world generator (:mod:`.world`).
"""

from pathlib import Path

#: the world generator's version (scenes, captions, brain model); a change retrains the models
SIM_VERSION = "nsd-sim-1.0"
#: the folder of the shipped models
SHIPPED_DIR = Path(__file__).resolve().parent / "weights" / SIM_VERSION
