"""DiffMix's downstream task (spec §2.5): HoVer-Net trained on the fold's real training patches,
plus, in the ``diffmix`` arm, SDEdit patches under the virtual maps; scored on the test tiles
with the HoVer-Net protocol (:mod:`medaug.metrics.nuclei`).

Training follows HoVer-Net's schedule: phases of Adam at ``learning_rate`` with a StepLR
(gamma 0.1) every ``lr_step_epochs`` epochs, each phase with its own epochs and batch size
(official: 50 epochs at batch 16 with an ImageNet-pretrained encoder frozen, then 50 of the
whole network at batch 4). Without ImageNet weights (none are available offline) every phase
trains the whole network. Each patch is shown in one of the eight dihedral variants, drawn
per epoch (HoVer-Net augments with flips and rotations among others). The last epoch's
network is scored (HoVer-Net keeps the last checkpoint; no test tile selects anything).
Test tiles are predicted whole, window by window (input ``patch_size``, the network's output
size apart, mirror-padded), then split into nuclei by MONAI's HoVer-Net post-processing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medaug.diffmix import params, stages
from medaug.diffmix.hovernet import HV, NC, NP, build_network, hovernet_loss, instances, output_size, patch_targets
from medaug.diffmix.label_maps import contiguous_ids
from medaug.diffmix.paths import SYNTHETIC_MANIFEST
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


def load_real_patches(prepared_dir: str | Path, tiles: list[str]) -> np.ndarray:
    """The prepared ``[N, P, P, 5]`` patches of ``tiles``, in the order of ``patches.tsv``."""
    prepared_dir = Path(prepared_dir)
    table = pd.read_csv(prepared_dir / "patches.tsv", sep="\t", dtype={"case_id": str, "patch_id": str})
    ids = table.loc[table.case_id.isin(tiles), "patch_id"]
    return np.stack([np.load(prepared_dir / "patches" / f"{patch_id}.npy") for patch_id in ids])


def pick_synthetic(folders: list[str | Path], count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` synthetic patches taken in turn from each folder (map kind), each folder's
    patches in a fixed random order: a larger count extends a smaller one's pick."""
    orders = []
    for folder in folders:
        ids = pd.read_csv(Path(folder) / SYNTHETIC_MANIFEST, sep="\t")["patch_id"].tolist()
        rng = np.random.default_rng(keyed_seed(seed, Path(folder).name))
        orders.append([(Path(folder), ids[i]) for i in rng.permutation(len(ids))])
    available = sum(len(order) for order in orders)
    if count > available:
        raise ValueError(
            f"{count} synthetic patches wanted but the map kinds hold {available}: raise "
            "diffmix.synthesis.patches_per_tile or lower diffmix.hovernet.ratios"
        )
    picked = []
    position = 0
    while len(picked) < count:
        for order in orders:
            if position < len(order) and len(picked) < count:
                picked.append(order[position])
        position += 1
    patches = np.stack([np.load(folder / "patches" / f"{patch_id}.npy") for folder, patch_id in picked])
    return patches, [f"{folder.name}/{patch_id}" for folder, patch_id in picked]


def gradmix_patches(
    prepared_dir: str | Path, maps_dir: str | Path, count: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """``count`` patches of the GradMix tiles (blended image, balancing map), cut where the
    real training patches are cut, in a fixed random order (a larger count extends a
    smaller one's pick)."""
    prepared_dir, maps_dir = Path(prepared_dir), Path(maps_dir)
    table = pd.read_csv(prepared_dir / "patches.tsv", sep="\t", dtype={"case_id": str, "patch_id": str})
    tiles = sorted(path.stem for path in maps_dir.glob("*.npz"))
    table = table[table.case_id.isin(tiles)].reset_index(drop=True)
    if count > len(table):
        raise ValueError(
            f"{count} GradMix patches wanted but the GradMix tiles hold {len(table)}: lower diffmix.hovernet.ratios"
        )
    order = np.random.default_rng(keyed_seed(seed, "gradmix")).permutation(len(table))[:count]
    size = int(read_json(prepared_dir / "meta.json")["patch_size"])
    maps: dict[str, dict] = {}
    patches, ids = [], []
    for index in order:
        row = table.iloc[index]
        if row.case_id not in maps:
            with np.load(maps_dir / f"{row.case_id}.npz") as data:
                maps[row.case_id] = {key: data[key] for key in ("image", "inst_map", "type_map")}
        tile = maps[row.case_id]
        window = (slice(row.row, row.row + size), slice(row.col, row.col + size))
        inst = contiguous_ids(tile["inst_map"][window])
        patches.append(
            np.concatenate(
                [tile["image"][window].astype(np.int32), inst[..., None], tile["type_map"][window][..., None]], axis=-1
            ).astype(np.int32)
        )
        ids.append(f"gradmix/{row.patch_id}")
    return np.stack(patches), ids


def dihedral8(patch: np.ndarray, variant: int) -> np.ndarray:
    """One of the eight symmetries of the square: ``variant % 4`` quarter turns, then a flip
    when ``variant >= 4``."""
    out = np.rot90(patch, variant % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if variant >= 4 else out)


def fit(patches: np.ndarray, num_types: int, settings: dict, seed: int, device: str) -> torch.nn.Module:
    """HoVer-Net's phases on ``patches`` ([N, P, P, 5]); returns the last epoch's network."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    network = build_network(settings["network"], num_types, settings["light_channels"]).to(device)
    out_size = output_size(settings["network"], settings["patch_size"])
    loss_fn = hovernet_loss(settings["protocol"])
    network.train()
    for phase, (epochs, batch_size) in enumerate(zip(settings["epochs"], settings["batch_sizes"], strict=True)):
        optimizer = torch.optim.Adam(network.parameters(), lr=settings["learning_rate"], betas=(0.9, 0.999))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings["lr_step_epochs"], gamma=0.1)
        progress = tqdm(range(epochs), desc=f"HoVer-Net phase {phase + 1}", unit="epoch")
        for epoch in progress:
            rng = np.random.default_rng([seed, phase, epoch])
            order = rng.permutation(len(patches))
            variants = rng.integers(0, 8, len(patches))
            total = 0.0
            for start in range(0, len(order), batch_size):
                chosen = order[start : start + batch_size]
                batch = np.stack([dihedral8(patches[i], variants[i]) for i in chosen])
                targets = {key: value.to(device) for key, value in patch_targets(batch, num_types, out_size).items()}
                image = targets.pop("image")
                loss = loss_fn(network(image), targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(chosen)
            scheduler.step()
            progress.set_postfix(loss=f"{total / len(order):.3f}")
        log.info(
            "phase %d: %d epochs at batch %d, last epoch's loss %.4f", phase + 1, epochs, batch_size, total / len(order)
        )
    return network.eval()


def predict_tile(network: torch.nn.Module, image: np.ndarray, in_size: int, out_size: int, device: str) -> dict:
    """The network's logits over a whole ``[H, W, 3]`` uint8 tile: windows of ``in_size`` whose
    centres ``out_size`` apart tile the image (mirror padding at the borders)."""
    rows, cols = image.shape[:2]
    margin = (in_size - out_size) // 2
    steps_r, steps_c = -(-rows // out_size), -(-cols // out_size)
    pad_r, pad_c = steps_r * out_size - rows, steps_c * out_size - cols
    padded = np.pad(image, ((margin, margin + pad_r), (margin, margin + pad_c), (0, 0)), mode="reflect")
    tensor = torch.from_numpy(padded.astype(np.float32) / 255.0).permute(2, 0, 1)
    canvas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i in range(steps_r):
            for j in range(steps_c):
                window = tensor[:, i * out_size : i * out_size + in_size, j * out_size : j * out_size + in_size]
                output = network(window[None].to(device))
                for key, value in output.items():
                    if key not in canvas:
                        canvas[key] = torch.zeros(value.shape[1], steps_r * out_size, steps_c * out_size)
                    top, left = (value.shape[-2] - out_size) // 2, (value.shape[-1] - out_size) // 2
                    block = value[0, :, top : top + out_size, left : left + out_size].cpu()
                    canvas[key][:, i * out_size : (i + 1) * out_size, j * out_size : (j + 1) * out_size] = block
    return {key: value[:, :rows, :cols] for key, value in canvas.items()}


def evaluate(network, prepared_dir: str | Path, tiles: list[str], types: list[int], settings: dict, device: str):
    """HoVer-Net's summary over the test tiles and one row per tile."""
    from medaug.metrics.nuclei import score_set

    in_size = settings["patch_size"]
    out_size = output_size(settings["network"], in_size)
    pairs, rows = [], []
    for tile in tiles:
        with np.load(Path(prepared_dir) / "tiles" / f"{tile}.npz") as data:
            image, true_inst, true_type = data["image"], data["inst_map"], data["type_map"]
        logits = predict_tile(network, image, in_size, out_size, device)
        pred_inst, pred_type = instances({NP: logits[NP], HV: logits[HV], NC: logits[NC]}, settings["post_processing"])
        pairs.append((true_inst, true_type, pred_inst, pred_type))
        rows.append({"tile": tile, "true_nuclei": int(true_inst.max()), "pred_nuclei": len(np.unique(pred_inst)) - 1})
    return score_set(pairs, types), rows


def train_hovernet(job: Job) -> dict:
    settings = job.settings
    arm, ratio, seed = job.wildcards["arm"], float(job.wildcards["ratio"]), job.number("seed")
    prepared = Path(job.inputs["prepared"])
    meta = read_json(prepared / "meta.json")
    fold = read_json(job.inputs["splits"])["folds"][0]
    num_types = len(meta["labels"])
    types = sorted(int(c) for c in meta["labels"] if int(c))
    real = load_real_patches(prepared, fold["train"])
    synthetic_ids: list[str] = []
    patches = real
    if arm == params.GRADMIX:
        needed = params.synthetic_needed(ratio, len(real))
        synthetic, synthetic_ids = gradmix_patches(prepared, job.inputs["maps"], needed, seed)
        patches = np.concatenate([real, synthetic.astype(real.dtype)])
    if arm == params.DIFFMIX:
        synthetic, synthetic_ids = pick_synthetic(
            job.inputs["synthetic"], params.synthetic_needed(ratio, len(real)), seed
        )
        patches = np.concatenate([real, synthetic.astype(real.dtype)])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log.info(
        "%s arm, ratio %g: %d real and %d synthetic training patches; %s network",
        arm,
        ratio,
        len(real),
        len(synthetic_ids),
        settings["network"],
    )
    network = fit(patches, num_types, settings, keyed_seed(seed, "hovernet"), device)
    summary, per_tile = evaluate(network, prepared, fold["test"], types, settings, device)
    rare = f"f1_type{settings['rare_class']}"
    log.info(
        "test tiles: Dice %.3f, AJI %.3f, PQ %.3f, F_d %.3f, rare-class F_c %.3f",
        summary["dice"],
        summary["aji"],
        summary["pq"],
        summary["f1_detection"],
        summary[rare],
    )
    record = {
        **{key: job.wildcards[key] for key in ("dataset", "arm", "ratio", "seed")},
        "real_patches": len(real),
        "synthetic_patches": len(synthetic_ids),
        "synthetic_ids": synthetic_ids,
        "test_tiles": fold["test"],
        "labels": meta["labels"],
        "rare_class": settings["rare_class"],
        "metrics": summary,
        "per_tile": per_tile,
    }
    with atomic_output(job.outputs["metrics"]) as tmp:
        write_json(tmp, record)
    return record


HOVERNET = Stage(stages.HOVERNET, train_hovernet)
hovernet_entry = HOVERNET.entry
