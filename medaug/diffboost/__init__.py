"""DiffBoost (segmentation): ControlNet on edge maps + a text prompt, fine-tuned per fold;
synthetic slices feed segmenters trained with the random merging mask.

``params`` (job settings from the config), ``paths`` (result-path templates), ``stages``
(what each rule runs, and its standalone entry point), ``slices`` (prepared slices and
synthetic pools), ``conditions`` (edge maps), ``generator`` (fine-tuning and sampling),
``segmenter`` (the MONAI arm), ``nnunet_arm`` and ``report``.
"""
