"""Evaluation: retrieval, the nsd-sim oracle (and, later, the image and caption metric battery)."""
