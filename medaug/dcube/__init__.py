"""D-Cube (classification): a class-conditional U-ViT trained with a contrastive loss on its
mid-block features (step 1), whose frozen blocks give the hyper-features of a classifier
(step 2), with optional class-balanced synthetic images. ``params`` says how its datasets
are prepared (grey images) and split; ``stages`` how each rule's job follows from the
config; ``generator``, ``classifier``, ``quality`` and ``report`` do the work."""
