"""What produced the numbers: the run's config, the code's git commit, package versions, input checksums,
and the judge CLIP that scored two-way CLIP and CLIP-S."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

from .page import Markup, h, join

__all__ = ["git_commit", "package_versions", "config_text", "provenance_section", "judges", "PACKAGES"]

PACKAGES = ("braindecode_pkg", "torch", "torchvision", "open_clip_torch", "diffusers", "transformers", "snakemake",
            "nilearn", "nibabel", "numpy", "h5py", "matplotlib")


def git_commit(path=None) -> str:
    """``git rev-parse HEAD`` of the repository holding ``path`` (default: this package), with
    ``" (uncommitted changes)"`` if tracked files differ; ``"unknown"`` without git or a repository."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    try:
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return head
    return head + (" (uncommitted changes)" if dirty else "")


def package_versions(names=PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def config_text(config) -> str:
    """The config as YAML (keys in their given order); JSON if YAML cannot represent it."""
    if config is None:
        return ""
    import yaml

    try:
        return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)
    except yaml.YAMLError:
        return json.dumps(config, indent=2, default=str, ensure_ascii=False)


def judges(parts: dict | None) -> list[dict]:
    """The distinct judge CLIPs (and the decoding CLIPs beside them) of the parts' info, each with
    the rows it scored: ``[{"judge": info, "decoding_clip": info, "rows": [...]}]``."""
    out: dict[str, dict] = {}
    for key, info in sorted((parts or {}).items()):
        j = (info or {}).get("judge_clip")
        if not j:
            continue
        k = json.dumps([j, info.get("decoding_clip")], sort_keys=True, default=str)
        out.setdefault(k, {"judge": j, "decoding_clip": info.get("decoding_clip") or {}, "rows": []})["rows"].append(key)
    return list(out.values())


def _judge_rows(parts) -> list[Markup]:
    rows = []
    for e in judges(parts):
        j, d = e["judge"], e["decoding_clip"]
        same = j.get("is_decoding_clip")
        rows.append(h("tr", h("td", j.get("name", "?"), " (", j.get("family", "?"), ")",
                              " — nsd-sim's judge" if j.get("sim") else ""),
                      h("td", h("code", j.get("weights", "?"))), h("td", h("code", j.get("weights_sha256", "?"))),
                      h("td", d.get("model", "?"), " ", h("code", d.get("weights_sha256", "?")),
                        " (the same weights: two-way CLIP and CLIP-S are inflated)" if same else ""),
                      h("td", ", ".join(e["rows"]))))
    return rows


def provenance_section(config, inputs: dict | None, commit: str, versions: dict, *,
                       parts: dict | None = None) -> tuple[Markup, list[str]]:
    """Code, package versions, configuration, input checksums and, from the parts' info, the judge
    CLIP that scored two-way CLIP and CLIP-S beside the decoding CLIP of the embed file."""
    notes = []
    out = [h("h3", "Code"), h("table", h("tr", h("th", "git commit"), h("td", h("code", commit))))]
    out.append(h("h3", "Package versions"))
    out.append(h("table", [h("tr", h("th", "package"), h("th", "version"))]
                 + [h("tr", h("td", h("code", k)), h("td", v)) for k, v in versions.items()]))
    out.append(h("h3", "Judge CLIP (two-way CLIP, CLIP-S)"))
    judge_rows = _judge_rows(parts)
    if judge_rows:
        out.append(h("div", h("table", [h("tr", [h("th", x) for x in ("judge", "weights", "sha256",
                                                                     "decoding CLIP (embed file)", "rows")])]
                              + judge_rows), class_="scroll"))
    else:
        notes.append("No judge recorded (no metrics.json given, or parts of an older version).")
        out.append(h("p", "No judge recorded (no metrics.json given, or parts of an older version).", class_="note"))
    out.append(h("h3", "Configuration"))
    text = config_text(config)
    if text:
        out.append(h("pre", text))
    else:
        notes.append("No configuration was given.")
        out.append(h("p", "No configuration was given.", class_="note"))
    out.append(h("h3", "Inputs (SHA-256)"))
    if inputs:
        out.append(h("div", h("table", [h("tr", h("th", "input"), h("th", "sha256"))]
                              + [h("tr", h("td", h("code", k)), h("td", h("code", v)))
                                 for k, v in sorted(inputs.items())]), class_="scroll"))
    else:
        notes.append("No input checksums were given.")
        out.append(h("p", "No input checksums were given.", class_="note"))
    return join(out), notes
