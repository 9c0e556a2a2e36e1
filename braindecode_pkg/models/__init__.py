"""Models: the CLIP wrapper (:mod:`.clip`) and the training of nsd-sim's own CLIP (:mod:`.train_clip`)."""
