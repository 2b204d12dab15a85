"""D-Cube (classification): class-conditional diffusion whose hyper-features and contrastive
learning drive a classifier. Today its data stages: ``params`` says how its datasets are
prepared (grey images) and split (official Train/Test where the source has one)."""
