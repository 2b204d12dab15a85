"""Whether D-Cube's synthetic images look like their class: per class, FID and KID against
the real training images, and the share that the baseline classifier (trained on real
images only) assigns to the class they were sampled for.

The feature extractor is the Inception-v3 of the FID literature when
``dcube.quality.feature_extractor`` names it; otherwise the baseline classifier's bottleneck,
whose FID is labelled as not comparable to Inception FID. Either way each class also gets
the same distances between two halves of its real training images (``fid_real_halves``,
``kid_real_halves``): the floor that the synthetic-vs-real distances are read against, as a
bottleneck distance has no familiar scale of its own.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from medaug.dcube import data, stages
from medaug.io import read_json, write_json
from medaug.metrics.image_quality import BottleneckExtractor, InceptionExtractor, frechet_distance, kernel_distance
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


def _baseline(weights: str, architecture: str, width: int, num_classes: int):
    from safetensors.torch import load_file

    from medaug.dcube.classifier import PlainClassifier

    model = PlainClassifier(architecture, num_classes, width)
    model.load_state_dict(load_file(weights))
    return model.eval()


def synthetic_quality(job: Job) -> dict:
    settings = job.settings
    prepared, splits = job.inputs["prepared"], read_json(job.inputs["splits"])
    classes = data.classes(prepared)
    real = data.role_images(prepared, splits, "train")
    synthetic = data.read_synthetic(job.inputs["synthetic"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    baseline = _baseline(job.inputs["classifier"], settings["baseline_network"], settings["resnet_width"], len(classes))
    if settings["feature_extractor"]:
        extractor = InceptionExtractor(settings["feature_extractor"], device)
    else:
        extractor = BottleneckExtractor(baseline, real.images.shape[-1])
        extractor.label = "baseline classifier's bottleneck (not comparable to Inception FID)"
    real_features, synthetic_features = extractor(real.images), extractor(synthetic.images)
    with torch.inference_mode():
        predicted = baseline(torch.from_numpy(synthetic.images[:, None])).argmax(1).numpy()
    per_class = []
    for index, name in enumerate(classes):
        real_c, synthetic_c = real.labels == index, synthetic.labels == index
        row = {
            "class": name,
            "real_images": int(real_c.sum()),
            "synthetic_images": int(synthetic_c.sum()),
            "baseline_accuracy_on_synthetic": float((predicted[synthetic_c] == index).mean())
            if synthetic_c.any()
            else None,
            "fid": None,
            "kid": None,
            "fid_real_halves": None,
            "kid_real_halves": None,
        }
        if real_c.sum() >= 2 and synthetic_c.sum() >= 2:
            row["fid"] = frechet_distance(real_features[real_c], synthetic_features[synthetic_c])
            row["kid"] = kernel_distance(real_features[real_c], synthetic_features[synthetic_c], seed=settings["seed"])[
                0
            ]
        # Alternate positions, so that both halves sample the whole (case-ordered) list.
        positions = np.flatnonzero(real_c)
        first_half, second_half = real_features[positions[0::2]], real_features[positions[1::2]]
        if len(first_half) >= 2 and len(second_half) >= 2:
            row["fid_real_halves"] = frechet_distance(first_half, second_half)
            row["kid_real_halves"] = kernel_distance(first_half, second_half, seed=settings["seed"])[0]
        per_class.append(row)
        log.info("%s: %s", name, row)
    record = {"feature_extractor": extractor.label, "per_class": per_class}
    write_json(job.outputs["quality"], record)
    return record


QUALITY = Stage(stages.QUALITY, synthetic_quality)
quality_entry = QUALITY.entry
