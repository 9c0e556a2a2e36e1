"""Data layer: the real NSD layout (:mod:`.nsd`), the simulated NSD (:mod:`.sim`) and its scenes."""
