"""braindecode_pkg: decode what a person saw from fMRI (NSD layout) into CLIP space, images and captions.

Importing the package is cheap on purpose: stages that do not need torch never import it.
"""

__version__ = "0.1.0"
