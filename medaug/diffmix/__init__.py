"""DiffMix (nuclei): semantic-mask diffusion and GradMix-style label maps for rare nuclei
classes; HoVer-Net downstream. Today its data stages: ``params`` says how its datasets are
prepared (HoVer-Net patches) and split (the datasets' official Train/Test)."""
