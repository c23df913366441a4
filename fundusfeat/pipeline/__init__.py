"""What users register images for, built from features and geometry: a pair
(:mod:`.register`), a table of pairs with a feature cache, resume and workers
(:mod:`.batch`), many fields of one eye on one canvas (:mod:`.montage`: :mod:`.field_graph`,
:mod:`.canvas`).
"""
