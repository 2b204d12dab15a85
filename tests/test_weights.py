"""Weights a user points the config at: a missing, random, foreign or code-running file
(a planted pickle) is one line naming the file, never a traceback; a full disk while
writing safetensors is one line naming the output."""

import os
import pickle
import subprocess

import pytest
import torch

from medaug.errors import DatasetError, OutputError
from medaug.io import atomic_output
from medaug.logs import run_job

from .test_diffmix import tiny_sdm


class Planted:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _planted_pickle(path, marker):
    with open(path, "wb") as handle:
        pickle.dump({"weight": Planted(marker)}, handle)


def _one_line_in_log(job, tmp_path):
    with pytest.raises(SystemExit):
        run_job(job, tmp_path / "job.log")
    text = (tmp_path / "job.log").read_text()
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    return text


@pytest.mark.parametrize("fault", ["missing", "random", "planted pickle", "wrong keys", "not a state dict"])
def test_a_bad_diffmix_checkpoint_is_one_line(tmp_path, fault):
    from medaug.diffmix.sdm import load_official_checkpoint

    path, marker = tmp_path / "ema_0.9999_010000.pt", tmp_path / "code-ran"
    if fault == "random":
        path.write_bytes(os.urandom(4096))
    elif fault == "planted pickle":
        _planted_pickle(path, marker)
    elif fault == "wrong keys":
        state = tiny_sdm().state_dict()
        state["renamed.weight"] = state.pop(next(iter(state)))
        torch.save(state, path)
    elif fault == "not a state dict":
        torch.save([torch.zeros(3)], path)
    with pytest.raises(DatasetError) as error:
        load_official_checkpoint(tiny_sdm(), path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    expected = {"missing": "file not found", "wrong keys": "do not match the network"}
    expected |= {"not a state dict": "must be a state dict"}
    assert expected.get(fault, "cannot read SDM weights") in str(error.value)
    assert not marker.exists(), "the planted pickle ran"
    text = _one_line_in_log(lambda: load_official_checkpoint(tiny_sdm(), path), tmp_path)
    assert str(path) in text


def test_a_planted_pickle_in_a_pretrained_model_folder_is_one_line_and_runs_nothing(tmp_path):
    from medaug.diffusion.models import build_tiny_components, load_pretrained_components
    from medaug.papers import validate_config

    tiny = validate_config({})["diffboost"]["controlnet"]["tiny_model"]
    unet = build_tiny_components(tiny, 32, ["a prompt"], 0)["unet"]
    folder = tmp_path / "sd15"
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    weights = folder / "unet" / "diffusion_pytorch_model.bin"
    marker = tmp_path / "code-ran"
    _planted_pickle(weights, marker)

    def load():
        load_pretrained_components(str(folder), None, "diffboost.controlnet.pretrained_model")

    with pytest.raises(DatasetError) as error:
        load()
    message = str(error.value)
    assert (
        message.startswith(f"{folder / 'unet'}: cannot load diffboost.controlnet.pretrained_model")
        and "\n" not in message
    )
    assert not marker.exists(), "the planted pickle ran"
    _one_line_in_log(load, tmp_path)


def _mount_small_tmpfs(folder):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    return mounted.returncode == 0


def test_a_full_disk_while_writing_safetensors_is_one_line(tmp_path):
    from safetensors.torch import save_file

    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _mount_small_tmpfs(disk):
        pytest.skip("needs root to mount a 64 KiB tmpfs")
    try:
        target = disk / "checkpoint-10" / "ema"

        def job():
            with atomic_output(target, directory=True) as tmp:
                save_file({"weight": torch.zeros(100_000)}, tmp / "unet.safetensors")

        with pytest.raises(OutputError, match="ema: no space left on device"):
            job()
        text = _one_line_in_log(job, tmp_path)
        assert f"{target}: no space left on device" in text
        assert not target.exists() and list(target.parent.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
