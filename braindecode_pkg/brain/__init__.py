"""The brain model: fMRI betas to CLIP space, and the ridge baseline.

:mod:`.model` (subject adapters, the shared encoder, heads and the diffusion prior),
:mod:`.losses` (contrastive, MixCo, MSE, prior), :mod:`.data` (preprocessed trials, CLIP and
latent targets, batches), :mod:`.train` (the one training loop: pretrain, adapt, scratch; on one
or many GPUs through accelerate; checkpoints and resume), :mod:`.ridge` (voxels to CLIP with a
leave-one-image-out penalty) and :mod:`.infer` (test-set predictions of any of them).

May import: the outputs' readers of earlier stages (:mod:`braindecode_pkg.embed`,
:mod:`braindecode_pkg.data`) and the core modules; never decode, evaluate or report.
"""
