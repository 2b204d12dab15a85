"""Plain ``nn.Module`` networks saved as diffusers-style model folders (``config.json`` +
``diffusion_pytorch_model.safetensors``), so that the shared training loop checkpoints and
exports them like diffusers models, without importing diffusers (seconds per job)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


class FolderModule(nn.Module):
    """A network whose constructor arguments are ``self.config`` (a namespace): enough to
    rebuild it from its folder."""

    config: SimpleNamespace

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": type(self).__name__, **vars(self.config)}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path):
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        config.pop("_class_name", None)
        model = cls(**config)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return model.eval()
