"""What the model-config parsers share: JSON text, JSON/YAML files, and the ``sim`` weights.

A model config (CLIP, image decoder, captioner) may be given as a mapping, its JSON text, or a
JSON/YAML file holding it; ``"sim"`` names nsd-sim's own model, either a folder passed
explicitly (the workflow's training output) or the one shipped in ``braindecode_pkg/weights``.
Every failure is one :class:`~braindecode_pkg.errors.InputError` naming the text or file.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def parse_json_text(text: str, what: str):
    """``text`` (a JSON object's text) parsed; ``what`` names the config in the message."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError(f"{what} {text!r} is not valid JSON ({e})") from None


def read_config_file(path, what: str):
    """The object held by a ``.json`` or ``.yaml``/``.yml`` config file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found")
    try:
        if p.suffix == ".json":
            return json.loads(p.read_text())
        import yaml

        return yaml.safe_load(p.read_text())
    except Exception as e:
        raise InputError(f"{p}: cannot parse the {what} ({e})") from None


def resolve_sim(sim_dir, shipped: Path, marker: str, missing: str) -> Path:
    """The folder ``sim`` refers to: ``sim_dir`` if given, else ``shipped`` if it holds ``marker``.

    ``missing``: the message when neither exists (it should say how to train one).
    """
    if sim_dir is not None:
        return Path(sim_dir).expanduser().resolve()
    if (shipped / marker).is_file():
        return shipped
    raise InputError(missing)
