"""The learned detector: networks, the model registry, weights, settings, image preparation
(field of view, working scale, tensors), keypoint selection, the detector core, the
``cv2.Feature2D`` adapter :class:`~fundusfeat.features.feature2d.R2D2Fundus` and the
inference backends (torch, ONNX on OpenCV DNN). Uses :mod:`fundusfeat.io` at most.
"""
