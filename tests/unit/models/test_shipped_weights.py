"""The nsd-sim models shipped in braindecode_pkg/weights/nsd-sim-1.0 against issue 3's ceilings.

Two checks per model: the held-out figures recorded beside the weights by their training run
(1,000 / 200 / 1,000 held-out scenes) meet the issue's bars, and a fresh measurement here, on a
smaller held-out set from the same never-trained streams, meets a looser one (small sets are
noisy). The caption ceiling is not reached yet: its bar is a strict xfail, so that the test
turns red (and the mark must go) the day it is. Full measurements: ``make bench-ceilings``.
"""

from __future__ import annotations

import json
import os

import numpy as np

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from braindecode_pkg.models import clip as mclip  # noqa: E402
from braindecode_pkg.models import train_captioner as tcap  # noqa: E402
from braindecode_pkg.models import train_clip  # noqa: E402
from braindecode_pkg.models import train_image_decoder as tid  # noqa: E402
from braindecode_pkg.models.captioner import SHIPPED_SIM_CAPTIONER, Captioner  # noqa: E402
from braindecode_pkg.models.image_decoder import SHIPPED_SIM_DECODER, ImageDecoder  # noqa: E402

SEED = 0  # the shipped models' training seed


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(2)
    return mclip.ClipEncoder.load("sim")


def test_clip_record_and_fresh_retrieval(clip):
    rec = json.loads((mclip.SHIPPED_SIM_CLIP / "open_clip_config.json").read_text())["braindecode"]
    assert rec["seed"] == SEED and rec["heldout"]["n_candidates"] == 300
    assert rec["heldout"]["image_to_caption_top1"] >= 0.8
    held = train_clip.scene_set(SEED, train_clip._P_HELDOUT, 300, 1, clip, cache_dir=False)
    m = train_clip.evaluate(clip, held, n_candidates=300, n_draws=5)
    assert m["image_to_caption_top1"] >= 0.7


def test_captioner_names_what_the_true_embeddings_hold(clip):
    """What the shipped captioner reaches (a regression guard; the issue's bar is the next test)."""
    rec = json.loads((SHIPPED_SIM_CAPTIONER / "config.json").read_text())["braindecode"]
    a = rec["heldout"]["attributes"]
    assert a["n"] == 1000 and a["colour"] >= 0.95 and a["count"] >= 0.95 and a["shape"] >= 0.55
    cap = Captioner.load("sim")
    held = tcap.sim_pairs(clip, SEED, tcap._P_HELDOUT, 120, 1, cache_dir=False)
    m = tcap.evaluate(cap, held)["attributes"]
    shuffled = dict(held, embeds=np.roll(held["embeds"], 1, axis=0))
    m0 = tcap.evaluate(cap, shuffled)["attributes"]
    assert m["colour"] >= 0.9 and m["shape"] >= 0.45
    assert m["colour"] > m0["colour"] + 0.5 and m["shape"] > m0["shape"] + 0.25


@pytest.mark.xfail(strict=True, reason="issue 3's caption ceiling is not reached yet: the shipped captioner "
                   "names the shape right for 0.58 of held-out scenes (one object 0.77, two 0.37) against "
                   "0.8; the CLIP's pooled embedding holds shape only partly (linear probe 0.72). See "
                   "braindecode_pkg/weights/nsd-sim-1.0/README.md")
def test_captioner_reaches_issue_3_shape_and_colour_ceiling():
    a = json.loads((SHIPPED_SIM_CAPTIONER / "config.json").read_text())["braindecode"]["heldout"]["attributes"]
    assert a["shape"] >= 0.8 and a["colour"] >= 0.8


def test_image_decoder_two_way_from_true_embeddings(clip):
    rec = json.loads((SHIPPED_SIM_DECODER / "braindecode.json").read_text())
    assert rec["heldout"]["two_way_generated"] >= 0.85
    recipe = tid.PRESETS["default"][0]
    dec = ImageDecoder.load("sim")
    held = tid.scene_set(SEED, tid._P_HELDOUT, 40, recipe.image_size, clip, cache_dir=False)
    gen = dec.generate(held["embeds"], guidance_scale=recipe.guidance_scale,
                       num_inference_steps=recipe.num_inference_steps, seed=0)
    assert gen.shape == (40, recipe.image_size, recipe.image_size, 3)
    shuffled = dec.generate(held["embeds"][::-1].copy(), guidance_scale=recipe.guidance_scale,
                            num_inference_steps=recipe.num_inference_steps, seed=0)
    right = tid.clip_two_way(clip, gen, held["embeds"])
    assert right >= 0.75
    assert right > tid.clip_two_way(clip, shuffled, held["embeds"]) + 0.2
