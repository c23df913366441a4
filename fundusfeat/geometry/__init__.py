"""Geometry between two images: transforms (similarity to quadratic, :mod:`.transforms`),
fitting and composing them (:mod:`.fitting`), resampling images through them and their
overlap (:mod:`.warp`), homography helpers, descriptor matching, robust estimation and
guided re-matching, the joint fit of a montage, and the verification that turns a
registration's evidence into a calibrated confidence. Uses :mod:`fundusfeat.io` at most.
"""
