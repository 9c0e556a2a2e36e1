"""The nsd-sim CLIP's architecture: an open_clip ``model_cfg`` held in code, by name.

:mod:`braindecode_pkg.decoders.clip` registers it with open_clip (``register_sim_arch``) so
``{"arch": "nsd-sim-clip", ...}`` builds it like any open_clip architecture; the CLIP recipe
(:mod:`.recipes.clip`) trains it.
"""

SIM_ARCH = "nsd-sim-clip"

#: the nsd-sim CLIP architecture (an open_clip ``model_cfg``), registered as :data:`SIM_ARCH`
SIM_MODEL_CFG: dict = {
    "embed_dim": 128,
    "custom_text": True,
    "vision_cfg": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
