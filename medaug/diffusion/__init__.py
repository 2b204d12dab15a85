"""Diffusion training and sampling shared by the three papers.

``training`` holds the resumable training loop (mixed precision, gradient accumulation,
EMA, checkpoints) and the export of trained models; ``sampling`` holds the DDIM loop with
classifier-free guidance. Import the submodules directly: this package stays free of
heavy imports so that ``import medaug.diffusion`` is cheap.
"""
