"""The environment the Makefile builds: the CPU torch pin and the torchvision trap."""

import importlib.util


def test_torch_is_the_pinned_release():
    import torch

    assert torch.__version__.split("+")[0] == "2.13.0"


def test_diffusion_stack_imports_without_torchvision():
    # nnunetv2 pulls a CUDA-linked torchvision that breaks `import diffusers`;
    # `make env` removes it.
    assert importlib.util.find_spec("torchvision") is None
    from diffusers import UNet2DConditionModel  # noqa: F401
    from monai.networks.nets import AttentionUnet  # noqa: F401
