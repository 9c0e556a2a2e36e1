"""The report: one self-contained HTML page (``results/report/index.html``) with the metrics table
(and, apart, published numbers on real NSD), an image/caption grid, brain maps of the subject
adapters, training curves, retrieval against the held-out subject's sessions, and provenance.

Every image is a PNG data URI; all text is escaped; figures are drawn headless (Agg) and nothing is
fetched. :func:`build_report` is the entry point; the CLI and the Snakemake rule only gather paths.
"""

from .brainmaps import adapter_importance, brain_map_entry, prep_geometry, voxel_volume
from .build import build_report, read_train_log
from .grid import find_decode_dirs, read_decode_dir
from .metrics import read_metrics

__all__ = ["build_report", "voxel_volume", "adapter_importance", "brain_map_entry", "prep_geometry",
           "find_decode_dirs", "read_decode_dir", "read_metrics", "read_train_log"]
