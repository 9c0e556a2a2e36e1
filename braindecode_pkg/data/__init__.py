"""The data layer: NSD's layout and files, read exactly as distributed.

:mod:`.layout` (paths of an NSD root, checks that it holds what the stages start from),
:mod:`.nsd` (the experiment design, trials, ROIs and betas in either format), :mod:`.matfile`
(the MATLAB v5 reader for ``nsd_expdesign.mat``), :mod:`.stimuli` (the image brick, stimulus
table and COCO captions) and :mod:`.placeholders` (an NSD-shaped tree of empty files, to plan a
real run without the data).

May import: only the core modules (``errors``, ``io``). Everything else reads data through it.
"""
