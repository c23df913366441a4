"""What users register images for, built from features and geometry.

- a pair: :mod:`.register` (``register``, ``ImageFeatures``: an image's features, field of
  view and vessel image, computed once and taken by every stage);
- a table of pairs: :mod:`.batch` (``register_dataset``) with :mod:`.table` (the input),
  :mod:`.rows` (the output), :mod:`.batch_work` (what a worker does), :mod:`.cache` (the
  feature cache), :mod:`.journal` (resumable output), :mod:`.locks` and
  :mod:`.executors` (processes, Dask);
- many fields of one eye: :mod:`.montage` with :mod:`.field_graph` (verified pairs),
  :mod:`.canvas` (bounds, seams, blend) and :mod:`.exposure` (gain fields);
- visits of one eye: :mod:`.changes` (``compare``, ``compare_series``) with
  :mod:`.alignment` (the follow-up in the baseline frame, illumination matched).
"""
