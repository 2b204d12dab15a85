"""D-Cube step 2 and its baseline (spec §3.4): the hyper-feature classifier on the frozen
U-ViT, and a plain ResNet on the same images, each trained with and without synthetic images.

The D-Cube head (official ``module/modules.py::D_Cube``): the outputs of the chosen U-ViT
blocks, each through one shared trainable LayerNorm, are concatenated along the token axis;
a 1x1 convolution treats those tokens as channels and mixes them into ``grid**2`` tokens,
reshaped to an ``embed_dim x grid x grid`` map. A ResNet guidance branch (a learned 3x3
grey-to-RGB convolution, the trunk without pooling and fc, trainable) gives an
``embed_dim``-channel map resized to the grid and a class score summed over positions; a 1x1
convolution fuses both maps into one channel, repeated per class and scaled by ``1 +
score``; three stages of parallel 3x3 and 5x5 convolutions (C -> 64 -> 32 -> 4, ReLU,
summed, BatchNorm) and an MLP (4 grid^2 -> 32 -> C, dropout 0.5) give the logits. The
U-ViT sees the clean image, a random ``t ~ U{1..T-1}`` as its time token and no class
embedding, at training and test time.

Loss: cross-entropy + ``consistency_weight`` x MSE between the logits of the image and of
its horizontal flip (the official CR term). The official "cycle" term is computed under
``no_grad`` from an argmax, so it never changes a weight; it is left out.

One run yields both protocols: ``official`` reads the last epoch on the test split with the
official test-time randomness (a random flip and a random ``t``); ``clean`` reads, on the
test split, the epoch that scored best on the validation split by the official criterion
(accuracy + macro recall + precision + F1), flip-free.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from medaug.dcube import data, stages
from medaug.dcube.resnet import build_resnet, load_torchvision_weights
from medaug.dcube.uvit import init_weights
from medaug.io import read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)

PROTOCOLS = ("official", "clean")


class TwoBranchStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.small = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.large = nn.Conv2d(in_channels, out_channels, 5, padding=2)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.small(x)) + F.relu(self.large(x)))


class DCubeClassifier(nn.Module):
    def __init__(
        self, uvit, blocks: list[int], num_classes: int, grid: int, guidance: str, num_timesteps: int, width: int = 64
    ):
        super().__init__()
        self.uvit = uvit.requires_grad_(False).eval()
        self.blocks = list(blocks)
        self.grid = grid
        self.num_timesteps = num_timesteps
        dim = uvit.config.embed_dim
        self.norm_f = nn.LayerNorm(dim)
        self.conv_channel = nn.Conv2d(len(blocks) * uvit.num_tokens, grid * grid, 1)
        self.conv4resnet = nn.Conv2d(1, 3, 3, padding=1)
        self.resnet = build_resnet(guidance, width)
        trunk_channels = self.resnet.fc.in_features
        self.resnet.fc = nn.Identity()
        self.conv4sub = nn.Conv2d(trunk_channels, dim, 3, padding=1)
        self.conv4score = nn.Conv2d(trunk_channels, num_classes, 1)
        self.conv_gray = nn.Conv2d(2 * dim, 1, 1)
        self.stages = nn.Sequential(TwoBranchStage(num_classes, 64), TwoBranchStage(64, 32), TwoBranchStage(32, 4))
        self.head = nn.Sequential(
            nn.Linear(4 * grid * grid, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, num_classes)
        )
        for module in (self.norm_f, self.head):
            module.apply(init_weights)

    def train(self, mode: bool = True):
        super().train(mode)
        self.uvit.eval()  # frozen, always in eval mode
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if not k.startswith("uvit.")}

    def hyper_features(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The chosen blocks' tokens, mixed and laid out as an (B, embed_dim, grid, grid) map."""
        with torch.no_grad():
            outputs = self.uvit(x, timesteps, None, return_blocks=True)
        tokens = torch.cat([self.norm_f(outputs[index]) for index in self.blocks], dim=1)
        mixed = self.conv_channel(tokens[:, :, None]).squeeze(2)  # (B, grid^2, dim)
        return mixed.permute(0, 2, 1).reshape(len(x), -1, self.grid, self.grid)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        hyper = self.hyper_features(x, timesteps)
        trunk = self.resnet.trunk(self.conv4resnet(x))
        guide = F.interpolate(self.conv4sub(trunk), size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        score = self.conv4score(trunk).sum(dim=(2, 3), keepdim=True)
        fused = self.conv_gray(torch.cat([hyper, guide], dim=1))
        fused = fused + fused * score
        return self.head(self.stages(fused).flatten(1))


class PlainClassifier(nn.Module):
    """The baseline: a ResNet on the grey image repeated to three channels."""

    def __init__(self, architecture: str, num_classes: int, width: int = 64):
        super().__init__()
        self.resnet = build_resnet(architecture, width)
        self.resnet.fc = nn.Linear(self.resnet.fc.in_features, num_classes)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        return self.resnet(x.repeat(1, 3, 1, 1))


def build_classifier(settings: dict, blocks: list[int] | None, num_classes: int, generator_dir=None) -> nn.Module:
    if settings["model"] == "cnn":
        model = PlainClassifier(settings["baseline_network"], num_classes, settings["resnet_width"])
        resnet = model.resnet
    else:
        from medaug.dcube.generator import load_generator

        uvit, _ = load_generator(generator_dir)
        model = DCubeClassifier(
            uvit,
            blocks,
            num_classes,
            settings["hyper_grid"],
            settings["guidance_network"],
            settings["num_timesteps"],
            settings["resnet_width"],
        )
        resnet = model.resnet
    if settings["imagenet_weights"]:
        load_torchvision_weights(resnet, settings["imagenet_weights"])
    return model


# --- metrics used for model selection (the report recomputes every metric with sklearn) --------


def selection_score(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """The official checkpoint criterion on one scale: accuracy + macro recall + macro
    precision + macro F1 (sklearn's ``zero_division=1``)."""
    recall, precision, f1 = [], [], []
    for c in range(num_classes):
        true_c, pred_c = labels == c, predicted == c
        hits = int((true_c & pred_c).sum())
        r = hits / true_c.sum() if true_c.sum() else 1.0
        p = hits / pred_c.sum() if pred_c.sum() else 1.0
        recall.append(r)
        precision.append(p)
        f1.append(2 * p * r / (p + r) if (p + r) else 0.0)
    return float((labels == predicted).mean() + np.mean(recall) + np.mean(precision) + np.mean(f1))


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def predict(model: nn.Module, images: np.ndarray, timesteps: torch.Tensor, flips: np.ndarray, batch_size: int):
    """Softmax probabilities (N, C) of ``images`` (flipped where ``flips``), on the model's device."""
    model.eval()
    device = model_device(model)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size, None].copy())
            flip = torch.from_numpy(flips[start : start + batch_size])
            x = torch.where(flip[:, None, None, None], x.flip(-1), x).to(device)
            logits = model(x, timesteps[start : start + batch_size].to(device))
            outputs.append(F.softmax(logits.float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


# --- training -------------------------------------------------------------------------------------


def fit(model: nn.Module, train: data.Images, val: data.Images, settings: dict, seed: int) -> dict:
    """Train ``settings["epochs"]`` epochs; return the last and the best-on-validation states."""
    torch.manual_seed(seed)
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings["learning_rate"], weight_decay=settings["weight_decay"], betas=(0.9, 0.999), fused=True
    )
    consistency = settings["consistency_weight"] if settings["model"] != "cnn" else 0.0
    rng = np.random.default_rng(keyed_seed(seed, "classifier-batches"))
    images = torch.from_numpy(train.images[:, None])
    labels = torch.from_numpy(train.labels.copy())
    val_generator = torch.Generator().manual_seed(keyed_seed(seed, "val-t"))
    val_t = torch.randint(1, settings["num_timesteps"], (len(val),), generator=val_generator)
    no_flips = np.zeros(len(val), dtype=bool)
    num_classes = settings["num_classes"]
    best = {"score": -1.0, "epoch": 0, "state": None}
    history = []
    started = time.perf_counter()
    for epoch in range(1, settings["epochs"] + 1):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for start in range(0, len(order), settings["batch_size"]):
            index = torch.from_numpy(order[start : start + settings["batch_size"]])
            if len(index) < 2:
                continue  # BatchNorm cannot train on one image (a ResNet's last map may be 1 x 1)
            x, y = images[index], labels[index]
            x = torch.where(torch.from_numpy(rng.random(len(index)) < 0.5)[:, None, None, None], x.flip(-1), x)
            t = torch.from_numpy(rng.integers(1, settings["num_timesteps"], len(index)))
            x, y, t = x.to(device), y.to(device), t.to(device)
            logits = model(x, t)
            loss = F.cross_entropy(logits, y)
            if consistency:
                loss = loss + consistency * F.mse_loss(logits, model(x.flip(-1), t))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        predicted = predict(model, val.images, val_t, no_flips, settings["batch_size"]).argmax(1)
        score = selection_score(val.labels, predicted, num_classes)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_score": round(score, 6)})
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": model.trainable_state()}
    wall = time.perf_counter() - started
    return {"last": model.trainable_state(), "best": best, "history": history, "wall_s": round(wall, 2)}


def _load_state(model: nn.Module, state: dict) -> None:
    model.load_state_dict(state, strict=False)


def classify(job: Job) -> dict:
    from safetensors.torch import save_file

    settings = job.settings
    seed = job.number("seed")
    torch.manual_seed(seed)
    prepared, splits = job.inputs["prepared"], read_json(job.inputs["splits"])
    scenario = job.wildcards["scenario"]
    train = data.role_images(prepared, splits, "train", scenario, settings["minority_class"])
    val = data.role_images(prepared, splits, "val")
    test = data.role_images(prepared, splits, "test")
    count = job.number("synthetic_count")
    if count:
        train = train.concat(data.read_synthetic(job.inputs["synthetic"], count))
    classes = data.classes(prepared)
    settings = {**settings, "num_classes": len(classes)}
    blocks = None
    if settings["model"] != "cnn":
        blocks = settings["blocks"] or read_json(job.inputs["blocks"])["chosen"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_classifier(settings, blocks, len(classes), job.inputs.get("generator")).to(device)
    log.info(
        "%s on %d training images (%d synthetic), blocks %s",
        job.wildcards["model"],
        len(train),
        count,
        blocks,
    )
    result = fit(model, train, val, settings, seed)

    generator = torch.Generator().manual_seed(keyed_seed(seed, "test-t"))
    test_t = torch.randint(1, settings["num_timesteps"], (len(test),), generator=generator)
    official_flips = np.random.default_rng(keyed_seed(seed, "test-flip")).random(len(test)) < 0.5
    frames = []
    for protocol, state, flips in (
        ("official", result["last"], official_flips),
        ("clean", result["best"]["state"], np.zeros(len(test), dtype=bool)),
    ):
        _load_state(model, state)
        probabilities = predict(model, test.images, test_t, flips, settings["batch_size"])
        frame = pd.DataFrame(
            {
                "protocol": protocol,
                "case_id": test.case_ids,
                "label_index": test.labels,
                "predicted": probabilities.argmax(1),
            }
        )
        for c in range(len(classes)):
            frame[f"p{c}"] = probabilities[:, c]
        frames.append(frame)
    for output in job.outputs.values():
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    pd.concat(frames).to_csv(job.outputs["predictions"], sep="\t", index=False, float_format="%.6f")
    save_file({k: v.contiguous() for k, v in result["best"]["state"].items()}, job.outputs["weights"])
    record = {
        "model": job.wildcards["model"],
        "blocks": blocks,
        "classes": classes,
        "train_images": {name: int((train.labels == i).sum()) for i, name in enumerate(classes)},
        "synthetic_images": count,
        "train_case_ids": [case for case in train.case_ids if not case.startswith("syn_")],
        "val_case_ids": val.case_ids,
        "selected_epoch": {"official": settings["epochs"], "clean": result["best"]["epoch"]},
        "history": result["history"],
        "device": device,
        "wall_s": result["wall_s"],
    }
    write_json(job.outputs["record"], record)
    return record


CLASSIFY = Stage(stages.CLASSIFY, classify)
classify_entry = CLASSIFY.entry
