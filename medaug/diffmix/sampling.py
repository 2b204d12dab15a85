"""DiffMix's synthesis: SDEdit-style re-rendering of a real patch under a virtual label map
(spec §2.4, the official ``ddim_sample_loop_progressive``).

The real patch is noised to the step ``strength`` of the way into a ``respaced_steps``-step
schedule (official: 55 % of ``ddim100``, i.e. step 540 of 1000), then denoised by DDIM
(eta 0, the x0 prediction clipped to [-1, 1] and the noise re-derived from it) under the
label map, with classifier-free guidance on the noise channels: ``eps_u + s (eps_c -
eps_u)``, the unconditional pass seeing an all-zero label map. The learned-variance
channels play no part in a deterministic DDIM step.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaug.diffmix import paths, stages
from medaug.diffmix.label_maps import contiguous_ids
from medaug.diffusion.sampling import ddim_sample
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


def sdedit_scheduler(settings: dict):
    """A DDIM scheduler over the training schedule whose ``set_timesteps(n)`` keeps every
    ``T / n``-th step from 0 (guided-diffusion's respacing ``ddim<n>``)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=settings["num_train_timesteps"],
        beta_schedule="linear",
        beta_start=settings["beta_start"],
        beta_end=settings["beta_end"],
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )


def sdedit_start_step(respaced_steps: int, strength: float) -> int:
    """Index into the descending timesteps where denoising starts: the last
    ``int(respaced_steps * strength)`` steps run (official ``ddim_percent``)."""
    kept = int(respaced_steps * strength)
    if not 1 <= kept <= respaced_steps:
        raise ValueError(f"strength {strength} keeps {kept} of {respaced_steps} steps")
    return respaced_steps - kept


def sdedit(
    network: torch.nn.Module,
    images: torch.Tensor,
    label_maps: torch.Tensor,
    settings: dict,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Re-render ``images`` (N, 3, H, W in [-1, 1]) under ``label_maps`` (N, C, H, W, see
    :func:`medaug.diffmix.sdm.semantic_condition`); returns images in [-1, 1]."""
    scheduler = sdedit_scheduler(settings)
    steps = settings["respaced_steps"]
    start = sdedit_start_step(steps, settings["strength"])
    scheduler.set_timesteps(steps)
    first = scheduler.timesteps[start]
    noise = torch.randn(images.shape, generator=generator, device=generator.device)
    init = scheduler.add_noise(images.float().cpu(), noise.cpu(), first.reshape(1))
    guided = settings["guidance_scale"] > 1.0
    condition = label_maps.to(device)
    if guided:
        condition = torch.cat([torch.zeros_like(condition), condition])

    def eps_fn(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        steps_in = torch.full((len(x_in),), int(t), device=x_in.device, dtype=torch.long)
        return network(x_in, steps_in, condition)[:, :3]

    return ddim_sample(
        eps_fn,
        tuple(images.shape),
        scheduler,
        steps,
        guidance_scale=settings["guidance_scale"],
        generator=generator,
        device=device,
        init=init,
        start_step=start,
        use_clipped_model_output=True,
    )


def crop_origins(rows: int, cols: int, patch_size: int, count: int) -> list[tuple[int, int]]:
    """``count`` patch origins (top, left) on an even grid over the tile: k x k origins, k =
    ceil(sqrt(count)), spaced evenly from the first to the last position a patch fits,
    read row by row; of those, ``count`` evenly spaced picks (all of them when count is a
    square). The official sampler's coordinates are undefined (hvcl/DiffMix#10); at 100
    patches of 256 px on a 1000 px tile this is the 10 x 10 grid its patch count suggests."""
    if rows < patch_size or cols < patch_size:
        raise ValueError(f"a {rows}x{cols} tile is smaller than the {patch_size} px patch")
    side = math.ceil(math.sqrt(count))
    tops = np.linspace(0, rows - patch_size, side).round().astype(int)
    lefts = np.linspace(0, cols - patch_size, side).round().astype(int)
    grid = [(int(top), int(left)) for top in tops for left in lefts]
    picks = np.linspace(0, len(grid) - 1, count).round().astype(int)
    return [grid[i] for i in picks]


def nucleus_contrast(image: np.ndarray, inst_map: np.ndarray) -> float:
    """Mean grey value (0..1) outside the nuclei minus inside them (stained nuclei are
    darker: positive when the image follows the map); NaN without both."""
    grey = image[..., :3].astype(np.float64).mean(axis=-1) / 255.0
    inside = inst_map > 0
    if not inside.any() or inside.all():
        return float("nan")
    return float(grey[~inside].mean() - grey[inside].mean())


def synthesize(job: Job) -> dict:
    """SDEdit patches of every training tile under its virtual map of this kind."""
    from medaug.diffmix.generator import load_generator
    from medaug.diffmix.sdm import semantic_condition

    settings = job.settings
    kind = job.wildcards["map_kind"]
    prepared, maps_dir = Path(job.inputs["prepared"]), Path(job.inputs["maps"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    network, record = load_generator(job.inputs["generator"], device)
    num_classes = len(record["labels"])
    size = settings["patch_size"]
    tiles = read_json(maps_dir / "counts.json")["tiles"]
    crops = []  # (tile, index, top, left, real image crop, virtual inst crop, virtual type crop, real inst crop)
    for tile in tiles:
        with np.load(prepared / "tiles" / f"{tile}.npz") as real, np.load(maps_dir / f"{tile}.npz") as virtual:
            image, real_inst = real["image"], real["inst_map"]
            inst_map, type_map = virtual["inst_map"], virtual["type_map"]
        for index, (top, left) in enumerate(crop_origins(*image.shape[:2], size, settings["patches_per_tile"])):
            window = (slice(top, top + size), slice(left, left + size))
            crops.append((tile, index, top, left, image[window], inst_map[window], type_map[window], real_inst[window]))
    log.info("%s: %d patches of %d px from %d training tiles", kind, len(crops), size, len(tiles))
    rows, quality = [], {"synthetic": [], "real_under_virtual": [], "real": []}
    batch_size = settings["batch_size"]
    from tqdm.auto import tqdm

    with atomic_output(job.outputs["synthetic"], directory=True) as tmp:
        (tmp / "patches").mkdir()
        for start in tqdm(range(0, len(crops), batch_size), desc=f"SDEdit {kind}", unit="batch"):
            batch = crops[start : start + batch_size]
            seed = keyed_seed(settings["seed"], job.wildcards["dataset"], kind, start)
            images = torch.from_numpy(np.stack([c[4] for c in batch]).astype(np.float32) / 127.5 - 1.0)
            types = torch.from_numpy(np.stack([c[6] for c in batch]).astype(np.int64))[:, None]
            insts = torch.from_numpy(np.stack([c[5] for c in batch]).astype(np.int64))[:, None]
            generator = torch.Generator(device="cpu").manual_seed(seed)
            with torch.no_grad():
                out = sdedit(
                    network,
                    images.permute(0, 3, 1, 2),
                    semantic_condition(types, insts, num_classes),
                    settings,
                    generator,
                    device,
                )
            rgb = ((out.clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for (tile, index, top, left, real_image, inst, type_crop, real_inst), pixels in zip(
                batch, rgb, strict=True
            ):
                patch_id = f"{tile}_{index:03d}"
                inst = contiguous_ids(inst)
                patch = np.concatenate(
                    [pixels.astype(np.int32), inst[..., None], type_crop[..., None].astype(np.int32)], axis=-1
                )
                np.save(tmp / "patches" / f"{patch_id}.npy", patch)
                quality["synthetic"].append(nucleus_contrast(pixels, inst))
                quality["real_under_virtual"].append(nucleus_contrast(real_image, inst))
                quality["real"].append(nucleus_contrast(real_image, real_inst))
                rows.append(
                    {
                        "patch_id": patch_id,
                        "source_tile": tile,
                        "top": top,
                        "left": left,
                        "map_kind": kind,
                        "seed": seed,
                        "n_nuclei": int(inst.max()),
                        "n_rare": int(len(np.unique(inst[type_crop == settings["rare_class"]]))),
                    }
                )
        pd.DataFrame(rows).to_csv(tmp / paths.SYNTHETIC_MANIFEST, sep="\t", index=False)
        summary = {key: float(np.nanmean(values)) for key, values in quality.items()}
        summary |= {"patches": len(rows), "map_kind": kind, "dataset": job.wildcards["dataset"]}
        write_json(tmp / paths.SYNTHETIC_QUALITY, summary)
    log.info(
        "nucleus contrast (outside - inside, grey 0..1): synthetic under its map %.3f; the real crop under the "
        "virtual map %.3f, under its own map %.3f",
        summary["synthetic"],
        summary["real_under_virtual"],
        summary["real"],
    )
    return summary


SYNTHESIS = Stage(stages.SYNTHESIS, synthesize)
synthesis_entry = SYNTHESIS.entry
