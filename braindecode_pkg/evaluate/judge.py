"""The judge: the CLIP that scores the reconstructions (``twoway_clip``) and captions (``clip_s``).

It is not the decoding CLIP. decode keeps, of ``n_samples`` reconstructions, the one whose
embedding under the decoding CLIP is nearest the prediction (MindEye2's best of n), so two-way
identification and CLIP-S under that same CLIP partly measure the selection that made them; the
field scores them with another network (MindEye, MindEye2: OpenAI's CLIP ViT-L/14, while they
decode with OpenCLIP ViT-H/14 or ViT-bigG/14). The decoding CLIP reaches evaluate only through
the embed file (retrieval's image embeddings and tokens).

A judge config (``models.judge_clip``; ``evaluate --judge-clip``) is a CLIP config as for
``models.clip`` (:func:`~braindecode_pkg.decoders.clip.parse_clip_config`), e.g. OpenAI's ViT-L/14
as open_clip reads it: ``{"arch": "ViT-L-14-quickgelu", "pretrained":
".../open_clip_pytorch_model.bin"}`` (open_clip's ``openai`` tag of ViT-L-14 sets QuickGELU, which a
model built from the plain ``ViT-L-14`` name lacks), or ``"sim"``: nsd-sim's judge CLIP, a second
CLIP trained by the decoding one's recipe from another seed (``train-sim-models --only
judge_clip``), read from ``sim_dir`` (``--sim-judge-clip``: the workflow's training output) or the
shipped :data:`~braindecode_pkg.decoders.clip.SHIPPED_SIM_JUDGE`. A missing shipped judge is an
:class:`~braindecode_pkg.errors.InputError` naming the folder and how to make it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["parse_judge_config", "judge_family", "describe_judge", "is_sim", "MISSING_SIM_JUDGE"]

#: how the nsd-sim judge is made (the message of a missing shipped judge)
MISSING_SIM_JUDGE = (
    "nsd-sim's judge CLIP not found (models.judge_clip 'sim': a second CLIP, trained like the decoding one "
    "from another seed, scores two-way identification and CLIP-S); make it with `braindecode-pkg "
    "train-sim-models --only judge_clip --out DIR` and copy DIR/judge_clip to this folder, pass "
    "--sim-judge-clip DIR/judge_clip, or let the workflow train it (models.sim_weights: train)"
)


def is_sim(spec) -> bool:
    """Whether a judge config names nsd-sim's judge (``"sim"`` or ``{local_dir|arch: sim}``, as a
    mapping or its JSON text)."""
    if isinstance(spec, str) and spec.strip().startswith("{"):
        import json

        try:
            spec = json.loads(spec)
        except ValueError:
            return False
    if isinstance(spec, dict):
        return str(spec.get("local_dir", "")).strip() == "sim" or spec.get("arch") == "sim"
    return str(spec).strip() == "sim"


def _shipped() -> Path:
    from ..decoders import clip as mclip

    return Path(mclip.SHIPPED_SIM_JUDGE)


def _as_mapping(spec):
    """A judge config given as JSON text or a JSON/YAML file, read (so that its ``sim`` is seen)."""
    from ..decoders.clip import LOCAL_DIR_CONFIG
    from ..decoders.spec import parse_json_text, read_config_file

    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            return parse_json_text(text, "judge CLIP config")
        if text.endswith((".json", ".yaml", ".yml")) and Path(text).name != LOCAL_DIR_CONFIG:
            return read_config_file(text, "judge CLIP config")
    return spec


def parse_judge_config(spec, *, sim_dir=None):
    """The :class:`~braindecode_pkg.decoders.clip.ClipConfig` of a judge config (module docstring).

    ``sim`` in it always means nsd-sim's judge (``sim_dir`` or the shipped one), never the decoding
    CLIP. Checks that its files exist; loads nothing."""
    from ..decoders.clip import LOCAL_DIR_CONFIG, parse_clip_config

    spec = _as_mapping(spec)
    if sim_dir is None:
        sim_dir = _shipped()
        if is_sim(spec) and not (sim_dir / LOCAL_DIR_CONFIG).is_file():
            raise InputError(f"{sim_dir}: {MISSING_SIM_JUDGE}")
    return parse_clip_config(spec, sim_dir=sim_dir)


def judge_family(cfg) -> str:
    """The judge's architecture family: the open_clip architecture without its activation
    variant (``ViT-L-14-quickgelu`` → ``ViT-L-14``), or a local-dir's architecture name."""
    name = str(cfg.arch if cfg.local_dir is None else cfg.name)
    return name[:-len("-quickgelu")] if name.endswith("-quickgelu") else name


def describe_judge(cfg, *, sim: bool, decoder_sha256: str | None = None) -> dict:
    """What the part's info records of the judge: name, family, config, weights and their
    SHA-256 (remembered by file stat), whether it is nsd-sim's, and whether its weights are the
    decoding CLIP's (``decoder_sha256``: the embed file's ``weights_sha256``; then two-way and
    CLIP-S are inflated by best-of-n)."""
    from ..io import cached_sha256, default_hash_cache

    sha = cached_sha256(cfg.weights, default_hash_cache())
    return {"name": cfg.name, "family": judge_family(cfg), "config": cfg.to_dict(), "weights": str(cfg.weights),
            "weights_sha256": sha, "sim": bool(sim),
            "is_decoding_clip": None if not decoder_sha256 else sha == str(decoder_sha256)}
