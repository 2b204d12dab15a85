"""nnU-Net trainer whose schedule is set from the environment (``-tr nnUNetTrainer_medaug``).

nnU-Net finds this class through ``nnUNet_extTrainer`` (set by ``medaug.nnunet.wrapper.nnunet_env``),
which imports this file as the top-level module ``nnUNetTrainer_medaug``: hence no relative
imports here, and no ``__init__.py`` in this folder.

Knobs (unset or empty = nnU-Net's stock behaviour):

- ``MEDAUG_NNUNET_EPOCHS``      epochs (stock 1000)
- ``MEDAUG_NNUNET_ITERS``       training iterations per epoch (stock 250)
- ``MEDAUG_NNUNET_VAL_ITERS``   validation iterations per epoch (stock 50)
- ``MEDAUG_NNUNET_BATCH``       batch size (stock: the plans' batch size)
- ``MEDAUG_NNUNET_SKIP_FINAL_VAL``  1/true/yes: skip the full-image validation of the
  validation cases after training (a ``--val`` run still validates)
- ``MEDAUG_NNUNET_SEED``        seed of Python's, NumPy's and torch's global RNGs, which
  nnU-Net's weight init, patch sampling and data augmentation draw from (stock: unseeded)
- ``MEDAUG_NNUNET_PLOT_EVERY``  draw ``progress.png`` every N epochs and after the last one;
  0 = after the last one only (stock: every epoch). nnU-Net's figure is 3000 x 5400 px and
  takes about 1.5 s of CPU to draw, as long as one short demo epoch
- ``MEDAUG_NNUNET_SAVE_EVERY`` write ``checkpoint_latest.pth`` every N epochs (stock 50), which
  a retried job continues from (``--c``)
- ``MEDAUG_NNUNET_THREADS``     torch threads on CPU (stock: every core of the machine,
  whatever the scheduler allotted; a fixed count also fixes the float summation order)

With a seed, ``nnUNet_n_proc_DA=0`` (augmentation in the training process, in a fixed
order; the wrapper sets it) and a fixed thread count, a CPU run is bit-reproducible.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

_TRUE = {"1", "true", "yes", "on"}


def _env_int(name: str, default: int | None, minimum: int = 1) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise ValueError(f"{name}={value!r} must be at least {minimum}")
    return number


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


class nnUNetTrainer_medaug(nnUNetTrainer):
    """Stock nnU-Net training with epochs, iterations, batch size and the final validation
    taken from ``MEDAUG_NNUNET_*`` environment variables."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 (nnU-Net's signature)
    ):
        # The signature must stay nnU-Net's: it records the init arguments by name in checkpoints.
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = _env_int("MEDAUG_NNUNET_EPOCHS", self.num_epochs)
        self.num_iterations_per_epoch = _env_int("MEDAUG_NNUNET_ITERS", self.num_iterations_per_epoch)
        self.num_val_iterations_per_epoch = _env_int("MEDAUG_NNUNET_VAL_ITERS", self.num_val_iterations_per_epoch)
        self.medaug_batch_size = _env_int("MEDAUG_NNUNET_BATCH", None)
        self.medaug_skip_final_val = _env_flag("MEDAUG_NNUNET_SKIP_FINAL_VAL")
        self._medaug_trained_here = False
        self.medaug_seed = _env_int("MEDAUG_NNUNET_SEED", None, minimum=0)
        self.medaug_plot_every = _env_int("MEDAUG_NNUNET_PLOT_EVERY", 1, minimum=0)
        self.save_every = _env_int("MEDAUG_NNUNET_SAVE_EVERY", self.save_every)
        threads = _env_int("MEDAUG_NNUNET_THREADS", None)
        if threads is not None and self.device.type == "cpu":
            torch.set_num_threads(threads)
        if self.medaug_seed is not None:
            # Before initialize() builds the network: its init draws from torch's RNG.
            random.seed(self.medaug_seed)
            np.random.seed(self.medaug_seed)
            torch.manual_seed(self.medaug_seed)
        self.print_to_log_file(
            f"medaug trainer settings: epochs={self.num_epochs}, iterations/epoch={self.num_iterations_per_epoch}, "
            f"val iterations/epoch={self.num_val_iterations_per_epoch}, "
            f"batch size={self.medaug_batch_size or 'from plans'}, skip final validation={self.medaug_skip_final_val}, "
            f"seed={self.medaug_seed}, progress plot every {self.medaug_plot_every or 'last'} epoch(s), "
            f"checkpoint every {self.save_every} epoch(s), "
            f"torch threads={torch.get_num_threads()}"
        )

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.medaug_batch_size is not None:
            if self.is_ddp:
                # DDP splits the batch over workers with oversampling per worker; not needed here.
                raise RuntimeError("MEDAUG_NNUNET_BATCH is not supported with multi-GPU (DDP) training")
            self.batch_size = self.medaug_batch_size
            self.print_to_log_file(f"batch size set to {self.batch_size} by MEDAUG_NNUNET_BATCH")

    def _plots_this_epoch(self) -> bool:
        last = self.current_epoch == self.num_epochs - 1
        every = self.medaug_plot_every
        return last or (every > 0 and (self.current_epoch + 1) % every == 0)

    def on_epoch_end(self):
        if self._plots_this_epoch():
            super().on_epoch_end()
            return
        # nnU-Net's on_epoch_end also logs, checkpoints and advances the epoch: keep all of
        # that and skip only the drawing, by shadowing the logger's method for this call.
        self.logger.plot_progress_png = lambda output_folder: None
        try:
            super().on_epoch_end()
        finally:
            del self.logger.plot_progress_png

    def on_train_end(self):
        super().on_train_end()
        self._medaug_trained_here = True

    def perform_actual_validation(self, save_probabilities: bool = False):
        # Skip only right after training: `nnUNetv2_train --val` asks for the validation explicitly.
        if self.medaug_skip_final_val and self._medaug_trained_here:
            self.print_to_log_file("final validation skipped (MEDAUG_NNUNET_SKIP_FINAL_VAL)")
            return
        super().perform_actual_validation(save_probabilities)
