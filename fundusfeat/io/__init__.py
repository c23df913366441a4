"""Getting images in and results out: checking image arrays, reading image files and
sets, the embedded demo pair, array helpers (dtype, resizing, discs), figures and the
progress line. Depends on no other part of fundusfeat.
"""
