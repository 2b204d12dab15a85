"""Training DiffMix's semantic diffusion model on the training tiles (spec §2.3), on the
shared resumable training loop.

Each sample is a random ``crop_size`` crop of a training tile in one of the six fixed
dihedral variants (identity, three quarter turns, two flips), as the official loader; its
label map is the one-hot merged types plus the instance edges. Two stages, as the official
scripts: ``pretrain`` (no label drop), then classifier-free ``finetune`` from the pretrained
weights with the label map zeroed for a fraction ``drop_rate`` of the samples. The loss is
the learned-variance hybrid loss of guided-diffusion (:class:`HybridLoss`), t uniform.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from medaug.diffmix import stages
from medaug.diffmix.sdm import SemanticUNet, load_official_checkpoint, semantic_condition
from medaug.diffusion.objectives import HybridLoss
from medaug.diffusion.sampling import linear_betas
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

STAGES = ("pretrain", "finetune")
MODEL_DIR, META = "sdm", "meta.json"
DIHEDRAL_VARIANTS = 6


def dihedral(array: np.ndarray, variant: int) -> np.ndarray:
    """The official six variants of an (H, W, ...) array: 0 identity, 1-3 rotations by
    ``variant`` quarter turns, 4 a flip along the width, 5 along the height."""
    if variant in (1, 2, 3):
        return np.rot90(array, variant, axes=(0, 1))
    if variant == 4:
        return array[:, ::-1]
    if variant == 5:
        return array[::-1]
    return array


class TileCrops:
    """``make_batch(i)`` for the training loop: a deterministic function of the micro-step
    ``i``. As the official loader, an epoch visits every (tile, variant) pair once in a
    random order (dropping the last incomplete batch); the crop origin, the timesteps, the
    noise and the label drop are drawn per step from ``(seed, i)``. ``num_classes`` counts
    the merged types with the background (the official setting)."""

    def __init__(
        self,
        tiles: list[dict],
        num_classes: int,
        crop_size: int,
        batch_size: int,
        drop_rate: float,
        num_train_timesteps: int,
        seed: int,
    ):
        self.tiles = tiles
        self.num_train_timesteps = num_train_timesteps
        self.num_classes = num_classes
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.drop_rate = drop_rate
        self.seed = seed
        small = [t["name"] for t in tiles if min(t["image"].shape[:2]) < crop_size]
        if small:
            raise ValueError(f"tiles smaller than the crop size {crop_size}: {small[:3]}")

    def item(self, index: int) -> tuple[int, int]:
        """(tile, variant) of the ``index``-th sample of the run."""
        pairs = len(self.tiles) * DIHEDRAL_VARIANTS
        per_epoch = max(pairs // self.batch_size, 1) * self.batch_size
        epoch, position = divmod(index, per_epoch)
        pair = int(np.random.default_rng([self.seed, epoch, 1]).permutation(pairs)[position % pairs])
        return divmod(pair, DIHEDRAL_VARIANTS)

    def __call__(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, step])
        images, types, instances = [], [], []
        for offset in range(self.batch_size):
            tile_index, variant = self.item(step * self.batch_size + offset)
            tile = self.tiles[tile_index]
            rows, cols = tile["image"].shape[:2]
            top = rng.integers(rows - self.crop_size + 1)
            left = rng.integers(cols - self.crop_size + 1)
            window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
            images.append(dihedral(tile["image"][window], variant))
            types.append(dihedral(tile["type_map"][window], variant))
            instances.append(dihedral(tile["inst_map"][window], variant))
        image = torch.from_numpy(np.stack(images).astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
        type_map = torch.from_numpy(np.stack(types).astype(np.int64))[:, None]
        inst_map = torch.from_numpy(np.stack(instances).astype(np.int64))[:, None]
        condition = semantic_condition(type_map, inst_map, self.num_classes)
        keep = torch.from_numpy((rng.random(self.batch_size) > self.drop_rate).astype(np.float32))
        return {
            "image": image.contiguous(),
            "condition": condition * keep[:, None, None, None],
            "timesteps": torch.from_numpy(rng.integers(0, self.num_train_timesteps, self.batch_size)),
            "noise": torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32)),
        }


def sdm_loss(schedule: dict):
    """``loss_fn(models, batch)`` of the shared loop: the hybrid loss averaged over the batch."""
    betas = linear_betas(schedule["num_train_timesteps"], schedule["beta_start"], schedule["beta_end"])
    hybrid = HybridLoss(betas)
    alpha_bars = torch.cumprod(1.0 - betas, 0)

    def loss_fn(models: dict, batch: dict) -> torch.Tensor:
        t = batch["timesteps"]
        scale = alpha_bars.to(t.device)[t].float()[:, None, None, None]
        x_t = scale.sqrt() * batch["image"] + (1.0 - scale).sqrt() * batch["noise"]
        output = models["sdm"](x_t, t, batch["condition"])
        return hybrid(output.float(), batch["image"], x_t, batch["noise"], t).mean()

    return loss_fn


def load_tiles(prepared_dir: str | Path, names: list[str]) -> list[dict]:
    tiles = []
    for name in names:
        with np.load(Path(prepared_dir) / "tiles" / f"{name}.npz") as data:
            tiles.append({"name": name, **{key: data[key] for key in ("image", "inst_map", "type_map")}})
    return tiles


def tiles_digest(tiles: list[dict]) -> str:
    digest = hashlib.sha256()
    for tile in tiles:
        for key in ("image", "inst_map", "type_map"):
            digest.update(np.ascontiguousarray(tile[key]).tobytes())
    return digest.hexdigest()[:16]


def build_sdm(settings: dict, num_classes: int) -> SemanticUNet:
    return SemanticUNet(image_size=settings["crop_size"], label_channels=num_classes + 1, **settings["model"])


def train_sdm(
    tiles: list[dict], num_classes: int, settings: dict, state_dir: str | Path, device: str | torch.device = "cpu"
) -> tuple[SemanticUNet, dict]:
    """Both training stages; checkpoints under ``state_dir/<stage>``. Returns the network
    (the last stage's raw weights) and per-stage summaries; export with the finetune
    stage's state dir to get its EMA weights."""
    from medaug.diffusion.training import TrainingSettings, train

    torch.manual_seed(settings["seed"])  # the initial weights
    network = build_sdm(settings, num_classes)
    identity = {"model": settings["model"], "schedule": settings["schedule"], "data": tiles_digest(tiles)}
    identity |= {key: settings[key] for key in ("crop_size", "batch_size")}
    summaries = {}
    for stage in STAGES:
        stage_settings = settings[stage]
        training = TrainingSettings(
            max_steps=stage_settings["steps"],
            learning_rate=stage_settings["learning_rate"],
            mixed_precision=settings["mixed_precision"],
            ema_decay=settings["ema_decay"],
            ema_warmup=False,  # guided-diffusion's constant rate from the first step
            max_grad_norm=None,
            weight_decay=0.0,
            checkpointing_steps=settings["checkpointing_steps"],
            seed=settings["seed"],
        )
        batches = TileCrops(
            tiles,
            num_classes,
            settings["crop_size"],
            settings["batch_size"],
            stage_settings["drop_rate"],
            settings["schedule"]["num_train_timesteps"],
            keyed_seed(settings["seed"], stage),  # fine-tuning sees other crops and noise than pretraining
        )
        identity = {**identity, stage: stage_settings}  # the finetune run depends on the pretrain run
        summaries[stage] = train(
            {"sdm": network},
            ["sdm"],
            sdm_loss(settings["schedule"]),
            batches,
            training,
            Path(state_dir) / stage,
            device=device,
            progress_desc=f"SDM {stage}",
            identity=identity,
        )
    return network, summaries


def train_generator(job: Job) -> dict:
    """The dataset's SDM as a model folder: trained on the fold's training tiles (the
    validation and test tiles never reach it), or the official checkpoint loaded."""
    from medaug.diffusion.training import export_models

    settings = job.settings
    prepared = Path(job.inputs["prepared"])
    meta = read_json(prepared / "meta.json")
    num_classes = len(meta["labels"])  # the merged types with the background
    tile_names = read_json(job.inputs["splits"])["folds"][0]["train"]
    state_dir = Path(settings["state_dir"])
    record = {"dataset": job.wildcards["dataset"], "labels": meta["labels"], "schedule": settings["schedule"]}
    if settings["checkpoint"]:
        torch.manual_seed(settings["seed"])
        network = build_sdm(settings, num_classes)
        load_official_checkpoint(network, settings["checkpoint"])
        log.info("loaded the official SDM checkpoint %s (no training)", settings["checkpoint"])
        record |= {"checkpoint": str(settings["checkpoint"]), "training_tiles": None, "training": None}
        export_from = None
    else:
        tiles = load_tiles(prepared, tile_names)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        log.info(
            "SDM on %d training tiles, %d px crops, batch %d: %d + %d steps",
            len(tiles),
            settings["crop_size"],
            settings["batch_size"],
            settings["pretrain"]["steps"],
            settings["finetune"]["steps"],
        )
        network, summaries = train_sdm(tiles, num_classes, settings, state_dir, device)
        record |= {"checkpoint": None, "training_tiles": tile_names, "training": summaries}
        export_from = state_dir / STAGES[-1]
    with atomic_output(job.outputs["generator"], directory=True) as tmp:
        export_models({MODEL_DIR: network}, [MODEL_DIR], tmp, export_from)
        write_json(tmp / META, record)
    return record


def load_generator(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SemanticUNet, dict]:
    """The exported SDM (eval mode, on ``device``) and its meta record."""
    folder = Path(folder)
    network = SemanticUNet.from_pretrained(folder / MODEL_DIR).to(device).eval()
    return network, read_json(folder / META)


GENERATOR = Stage(stages.GENERATOR, train_generator)
generator_entry = GENERATOR.entry
