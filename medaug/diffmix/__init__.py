"""DiffMix (nuclei): semantic-mask diffusion and GradMix-style label maps for rare nuclei
classes; HoVer-Net downstream. ``params`` says how its datasets are prepared (HoVer-Net
patches) and split (the datasets' official Train/Test); ``label_maps`` makes the virtual
label maps; ``sdm`` is the semantic diffusion network (official checkpoint layout),
``generator`` trains it and ``sampling`` re-renders real patches under virtual maps."""
