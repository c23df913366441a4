"""What users register images for, built from features and geometry: a pair
(:mod:`.register`), a table of pairs with a feature cache, resume and workers
(:mod:`.batch`).
"""
