"""nnU-Net v2 through its own command-line tools: ``wrapper`` (datasets, splits, plan, train,
predict, each step a subprocess), ``cli`` (the launcher those subprocesses run) and
``trainers/`` (short trainers found through ``nnUNet_extTrainer``). Import the submodules
directly: this package stays free of heavy imports."""
