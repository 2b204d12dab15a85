"""Whether D-Cube's synthetic images look like their class: per class, FID and KID of the
synthetic images against one half of the real training images (split by alternate patients),
beside the same distances of the other real half (the real-vs-real floor, at the same size),
and the share that the baseline classifier (trained on real images only) assigns to the class
they were sampled for.

The feature extractor is the Inception-v3 of the FID literature when
``dcube.quality.feature_extractor`` names it; otherwise the baseline classifier's bottleneck,
whose distances have no familiar scale of their own (the tables name them feature FD/KD) and
are read against the real-vs-real floor.
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
    real_rows = data.role_rows(prepared, splits, "train")
    real = data.load_images(prepared, real_rows)
    patients = real_rows.patient_id.to_numpy()
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
        # The real images split by alternate patients (so that one patient's near-duplicate
        # images never sit on both sides); the synthetic images and the other real half are
        # compared with the same reference half, at the same size: the real-vs-real distance
        # is then the floor a perfect generator would reach.
        class_patients = list(dict.fromkeys(patients[real_c]))
        other_half = np.isin(patients, class_patients[0::2]) & real_c
        reference = np.isin(patients, class_patients[1::2]) & real_c
        size = int(other_half.sum())
        synthetic_sample = synthetic_features[np.flatnonzero(synthetic_c)[:size]]
        if size >= 2 and reference.sum() >= 2 and len(synthetic_sample) >= 2:
            row["fid"] = frechet_distance(synthetic_sample, real_features[reference])
            row["kid"] = kernel_distance(synthetic_sample, real_features[reference], seed=settings["seed"])[0]
            row["fid_real_halves"] = frechet_distance(real_features[other_half], real_features[reference])
            row["kid_real_halves"] = kernel_distance(
                real_features[other_half], real_features[reference], seed=settings["seed"]
            )[0]
        per_class.append(row)
        log.info("%s: %s", name, row)
    record = {"feature_extractor": extractor.label, "per_class": per_class}
    write_json(job.outputs["quality"], record)
    return record


QUALITY = Stage(stages.QUALITY, synthetic_quality)
quality_entry = QUALITY.entry
