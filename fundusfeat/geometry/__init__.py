"""Geometry between two images: transforms (similarity to quadratic), homography helpers,
descriptor matching, robust estimation and guided re-matching, and the verification that
turns a registration's evidence into a calibrated confidence. Uses :mod:`fundusfeat.io` at
most.
"""
