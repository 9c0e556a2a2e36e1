"""The report: one self-contained HTML page (``results/report/index.html``) with the metrics table
(and, apart, published numbers on real NSD), an image/caption grid, brain maps of the subject
adapters, training curves, retrieval against the held-out subject's sessions, and provenance.

Every image is a PNG data URI; all text is escaped; figures are drawn headless (Agg) and nothing is
fetched. :func:`.build.build_report` is the entry point; the CLI and the Snakemake rule only gather paths.

May import: every stage's readers (it shows all of them) and the core modules; only the CLI and
the workflow import it.
"""
