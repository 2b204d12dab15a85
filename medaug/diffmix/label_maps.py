"""DiffMix's virtual label maps: the nuclei a semantic-mask diffusion model is asked to draw.

Two kinds, both made from the training tiles only (spec §2.4):

- **balancing** (GradMix, as ``GradMix/grad_mix.py``): in each tile, a fraction of the
  major-class nuclei away from the border is replaced, smallest first, by a rare-class
  nucleus at least ``size_ratio`` times smaller than the major one dilated twice; each donor
  serves once per tile, the first fitting donor is taken (the tile's own rare nuclei first,
  then the other training tiles in a seeded random order), and a major without a fitting
  donor stays as it is.
- **enlarging** (the paper's second kind, absent from the official code): the tile's map
  plus nuclei copied from other training tiles, drawn class-balanced and pasted into free
  background, so the generator draws more and more varied nuclei per patch.

Both return a new :class:`LabelMap` with contiguous instance ids and recomputed centroids,
and a record of every edit (which donor from which tile went where).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from medaug.diffmix import stages
from medaug.io import atomic_output, read_json, write_json
from medaug.seeds import keyed_seed
from medaug.stage import Job, Stage

log = logging.getLogger(__name__)


@dataclass
class LabelMap:
    """A tile's nuclei: ``inst_map`` (H×W, 0 background, ids 1..N) and the merged type of
    each id (``inst_type[id - 1]``)."""

    inst_map: np.ndarray
    inst_type: np.ndarray

    @property
    def count(self) -> int:
        return len(self.inst_type)

    def type_map(self) -> np.ndarray:
        lookup = np.concatenate([[0], self.inst_type]).astype(np.uint8)
        return lookup[self.inst_map]

    def areas(self) -> np.ndarray:
        return np.bincount(self.inst_map.ravel(), minlength=self.count + 1)[1:]

    def centroids(self) -> np.ndarray:
        """(N, 2) centroids as (x, y), as HoVer-Net's ``inst_centroid``; NaN for an empty id."""
        rows, cols = np.indices(self.inst_map.shape)
        ids = self.inst_map.ravel()
        area = np.bincount(ids, minlength=self.count + 1)[1:].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.bincount(ids, cols.ravel(), minlength=self.count + 1)[1:] / area
            y = np.bincount(ids, rows.ravel(), minlength=self.count + 1)[1:] / area
        return np.stack([x, y], axis=1)

    def class_counts(self, classes: list[int]) -> dict[int, int]:
        return {c: int((self.inst_type == c).sum()) for c in classes}


def relabel(inst_map: np.ndarray, inst_type: np.ndarray) -> LabelMap:
    """Contiguous ids 1..N in the order of the old ids; ids no pixel carries any more (a
    nucleus overdrawn by a pasted one) are dropped."""
    present = np.unique(inst_map[inst_map > 0])
    lookup = np.zeros(max(int(inst_map.max()), len(inst_type)) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1)
    return LabelMap(lookup[inst_map], inst_type[present - 1].astype(np.uint8))


def contiguous_ids(inst_map: np.ndarray) -> np.ndarray:
    """Instance ids 1..N in the order of the old ids (HoVer-Net's ``remap_label``)."""
    present = np.unique(inst_map[inst_map > 0])
    lookup = np.zeros(int(inst_map.max()) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1)
    return lookup[inst_map]


@dataclass
class Nucleus:
    """A donor: one nucleus' mask cut to its bounding box, and where it came from."""

    tile: str
    instance: int
    type: int
    mask: np.ndarray  # bool, bounding box of the nucleus
    centroid: tuple[float, float] = (float("nan"), float("nan"))  # (x, y) as stored in the label file
    origin: tuple[int, int] = (0, 0)  # (row, col) of the mask's box in its tile
    area: int = field(init=False)

    def __post_init__(self):
        self.area = int(self.mask.sum())


def away_from_border(centroids: np.ndarray, shape: tuple[int, int], border_px: float) -> np.ndarray:
    """Nuclei whose centroid lies at least ``border_px`` inside every tile edge (the official
    test, on the centroids as stored in the label file)."""
    x, y = centroids[:, 0], centroids[:, 1]
    height, width = shape
    with np.errstate(invalid="ignore"):
        return (x >= border_px) & (x <= width - border_px) & (y >= border_px) & (y <= height - border_px)


def nuclei(
    tile: str, labels: LabelMap, centroids: np.ndarray, types: set[int], border_px: float, whole: bool = False
) -> list[Nucleus]:
    """The tile's nuclei of the given types away from the border, in id order; ``whole``
    also leaves out nuclei the tile edge cuts (their box touches it)."""
    eligible = away_from_border(centroids, labels.inst_map.shape, border_px)
    boxes = ndimage.find_objects(labels.inst_map, max_label=labels.count)
    height, width = labels.inst_map.shape
    found = []
    for index, box in enumerate(boxes):
        if box is None or not eligible[index] or int(labels.inst_type[index]) not in types:
            continue
        if whole and (box[0].start == 0 or box[1].start == 0 or box[0].stop == height or box[1].stop == width):
            continue
        mask = labels.inst_map[box] == index + 1
        centroid = tuple(map(float, centroids[index]))
        origin = (box[0].start, box[1].start)
        found.append(Nucleus(tile, index + 1, int(labels.inst_type[index]), mask, centroid, origin))
    return found


def box_origin(center_xy: tuple[float, float], shape: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of a box of ``shape`` centred on ``center_xy`` (rounded; an odd side puts
    the extra pixel after the centre, as ``grad_mix.py``'s ``int(round(c) - h / 2)``)."""
    return int(round(center_xy[1])) - (shape[0] + 1) // 2, int(round(center_xy[0])) - (shape[1] + 1) // 2


def paste(inst_map: np.ndarray, mask: np.ndarray, center_xy: tuple[float, float], instance: int) -> np.ndarray:
    """Write ``instance`` into ``inst_map`` where ``mask`` lands with its box centred on
    ``center_xy`` (rounded; an odd side puts the extra pixel after the centre, as
    ``grad_mix.py``'s ``int(round(c) - h / 2)``), clipped at the tile edge; returns the
    pasted pixels."""
    height, width = mask.shape
    top, left = box_origin(center_xy, mask.shape)
    canvas = np.zeros(inst_map.shape, dtype=bool)
    rows = slice(max(top, 0), min(top + height, inst_map.shape[0]))
    cols = slice(max(left, 0), min(left + width, inst_map.shape[1]))
    canvas[rows, cols] = mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    inst_map[canvas] = instance
    return canvas


@dataclass
class Edit:
    """One change of a virtual map: ``instance`` of the new map (before relabelling) now
    holds ``donor_instance`` of ``donor_tile``; ``replaced_type`` is 0 for an added nucleus."""

    instance: int
    replaced_type: int
    replaced_area: int
    donor_tile: str
    donor_instance: int
    donor_type: int
    donor_area: int


def _window(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """``image[top:top + height, left:left + width]``, edge-padded where it leaves the image."""
    rows = np.clip(np.arange(top, top + height), 0, image.shape[0] - 1)
    cols = np.clip(np.arange(left, left + width), 0, image.shape[1] - 1)
    return image[np.ix_(rows, cols)]


class GradMixImage:
    """GradMix's blended image of one tile (``grad_mix.py``'s ``final``), built edit by edit
    beside its balancing map. For each replaced nucleus the donor tile's window of the size
    of the major nucleus dilated twice, placed so that the donor nucleus' pixels land on
    its pasted label (the official window is centred on the donor's stored centroid, up
    to 2 px off the label), with the donor nucleus' pixels moved halfway to this tile's
    mean nuclear colour, replaces the dilated major's box in a copy of the original tile; that copy is blended into the
    running image with weight 1 on the pasted nucleus, falling linearly with the chessboard
    distance to it across the ring (the dilated major and the pasted nucleus, minus the
    pasted nucleus), by the official formula (which applies the ring weight twice); then
    the ring is median-smoothed (disk 1 on red and green, disk 5 on blue)."""

    def __init__(self, image: np.ndarray, labels: LabelMap, donor_images: dict, donor_maps: dict):
        self.original = image[..., :3].astype(np.float32)
        self.final = image[..., :3].astype(np.uint8).copy()
        nuclear = labels.inst_map > 0
        self.mean_colour = self.original[nuclear].mean(axis=0) if nuclear.any() else np.zeros(3, np.float32)
        self.donor_images, self.donor_maps = donor_images, donor_maps

    def add(self, dilated: np.ndarray, translated: np.ndarray, donor: Nucleus, paste_origin: tuple[int, int]) -> None:
        """Blend one edit: ``dilated`` (the major nucleus dilated) and ``translated`` (the
        pasted donor, its box at ``paste_origin`` before any clipping at the tile edge) are
        boolean masks of the whole tile."""
        from skimage.filters import median
        from skimage.morphology import disk

        if not translated.any():
            return
        rows, cols = np.nonzero(dilated)
        top1, left1 = int(rows.min()), int(cols.min())
        height, width = int(rows.max()) + 1 - top1, int(cols.max()) + 1 - left1
        top2 = donor.origin[0] - (paste_origin[0] - top1)
        left2 = donor.origin[1] - (paste_origin[1] - left1)
        window = _window(self.donor_images[donor.tile][..., :3], top2, left2, height, width).astype(np.float32)
        own = _window(self.donor_maps[donor.tile], top2, left2, height, width) == donor.instance
        window[own] = (window[own] + self.mean_colour) / 2

        union = dilated | translated
        rows, cols = np.nonzero(union)
        margin = 6  # the disk-5 median reads 5 px around the ring
        region = (
            slice(max(int(rows.min()) - margin, 0), min(int(rows.max()) + 1 + margin, union.shape[0])),
            slice(max(int(cols.min()) - margin, 0), min(int(cols.max()) + 1 + margin, union.shape[1])),
        )
        pasted = self.original[region].copy()
        r0, c0 = region[0].start, region[1].start
        pasted[top1 - r0 : top1 - r0 + height, left1 - c0 : left1 - c0 + width] = window
        inside, union_local = translated[region], union[region]
        ring = union_local & ~inside
        weight = ndimage.distance_transform_cdt(~inside, metric="chessboard").astype(np.float32)
        weight[~union_local] = 0
        if ring.any():
            weight[ring] -= 1
            top = weight[ring].max()
            weight[ring] = 1 - (weight[ring] / top if top > 0 else 0)
        weight[inside] = 1
        final = self.final[region].astype(np.float32)
        m, t, r, w = union_local[..., None], inside[..., None], ring[..., None], weight[..., None]
        final = final * (1 - m) + pasted * t + pasted * (w * r) + final * ((1 - w) * r)
        final = np.clip(pasted * w + final * (1 - w), 0, 255).astype(np.uint8)
        smooth = np.stack([median(final[..., c], disk(radius)) for c, radius in enumerate((1, 1, 5))], axis=-1)
        final[ring] = smooth[ring]
        self.final[region] = final


def balancing_map(
    tile: str,
    labels: LabelMap,
    centroids: np.ndarray,
    donor_tiles: dict[str, list[Nucleus]],
    rng: np.random.Generator,
    settings: dict,
    image: GradMixImage | None = None,
) -> tuple[LabelMap, list[Edit]]:
    """GradMix's label map for one training tile (and, given ``image``, its blended image).
    ``donor_tiles``: the rare-class nuclei of every training tile (this one included), as
    :func:`nuclei` returns them;
    ``settings``: ``rare_class``, ``border_px``, ``replace_fraction``, ``size_ratio``,
    ``dilation_iterations``, ``same_tile_donors_first``."""
    rare = settings["rare_class"]
    eligible = away_from_border(centroids, labels.inst_map.shape, settings["border_px"])
    majors = np.flatnonzero(eligible & (labels.inst_type != rare) & (labels.inst_type != 0)) + 1
    picked = rng.choice(majors, int(settings["replace_fraction"] * len(majors)), replace=False)
    areas = labels.areas()
    picked = sorted(picked.tolist(), key=lambda instance: areas[instance - 1])  # smallest first, stable

    others = [name for name in donor_tiles if name != tile]
    order = [others[i] for i in rng.permutation(len(others))]
    if settings["same_tile_donors_first"]:
        order = [tile, *order]
    pool = [donor for name in order for donor in donor_tiles.get(name, [])]

    inst_map = labels.inst_map.copy()
    inst_type = labels.inst_type.copy()
    structure = ndimage.generate_binary_structure(2, 1)
    boxes = ndimage.find_objects(labels.inst_map, max_label=labels.count)
    grow = settings["dilation_iterations"]
    height, width = inst_map.shape
    edits = []
    for instance in picked:
        box = boxes[instance - 1]
        # The dilated nucleus lies within its box grown by the dilation: work there only.
        padded = tuple(
            slice(max(side.start - grow, 0), min(side.stop + grow, size))
            for side, size in zip(box, (height, width), strict=True)
        )
        own = labels.inst_map[padded] == instance
        room = int(ndimage.binary_dilation(own, structure, iterations=grow).sum()) if grow else int(own.sum())
        pick = next((i for i, donor in enumerate(pool) if room >= settings["size_ratio"] * donor.area), None)
        if pick is None:  # no rare nucleus small enough: this major stays
            continue
        donor = pool.pop(pick)
        inst_map[box][inst_map[box] == instance] = 0
        center = tuple(centroids[instance - 1])
        translated = paste(inst_map, donor.mask, center, instance)
        if image is not None:
            dilated = np.zeros_like(translated)
            dilated[padded] = ndimage.binary_dilation(own, structure, iterations=grow) if grow else own
            image.add(dilated, translated, donor, box_origin(center, donor.mask.shape))
        edits.append(
            Edit(
                instance,
                int(inst_type[instance - 1]),
                int(areas[instance - 1]),
                donor.tile,
                donor.instance,
                donor.type,
                donor.area,
            )
        )
        inst_type[instance - 1] = rare
    # A later paste can cover an earlier one completely (as in the official code): that
    # nucleus is gone, and so is its edit.
    present = set(np.unique(inst_map).tolist())
    return relabel(inst_map, inst_type), [edit for edit in edits if edit.instance in present]


def enlarging_map(
    tile: str,
    labels: LabelMap,
    donor_tiles: dict[str, list[Nucleus]],
    rng: np.random.Generator,
    settings: dict,
) -> tuple[LabelMap, list[Edit]]:
    """The paper's second kind of virtual map, which the official code lacks: the tile's
    nuclei kept as they are, plus ``added_fraction`` times as many nuclei from the other
    training tiles, the classes in turn, each pasted at a random background position where
    it keeps ``gap_px`` from every nucleus; a nucleus that does not fit in
    ``tries_per_nucleus`` tries is skipped. ``donor_tiles``: every training tile's whole
    nuclei of all classes."""
    by_class: dict[int, list[Nucleus]] = {}
    for name, found in donor_tiles.items():
        if name != tile:
            for donor in found:
                by_class.setdefault(donor.type, []).append(donor)
    classes = sorted(by_class)
    wanted = int(round(settings["added_fraction"] * labels.count))
    inst_map = labels.inst_map.copy()
    inst_type = list(labels.inst_type)
    occupied = (
        ndimage.binary_dilation(inst_map > 0, iterations=settings["gap_px"]) if settings["gap_px"] else inst_map > 0
    )
    gap = settings["gap_px"]
    height, width = inst_map.shape
    edits = []
    everything = [d for c in classes for d in by_class[c]]
    for slot in range(wanted if classes else 0):
        candidates = by_class[classes[slot % len(classes)]] if settings["class_balanced"] else everything
        for _ in range(settings["tries_per_nucleus"]):
            donor = candidates[rng.integers(len(candidates))]
            rows, cols = donor.mask.shape
            y = rng.uniform(0, height)  # drawn before x, as always
            top, left = box_origin((rng.uniform(0, width), y), donor.mask.shape)
            if top < 0 or left < 0 or top + rows > height or left + cols > width:  # cut by the edge
                continue
            window = (slice(top, top + rows), slice(left, left + cols))
            if not (occupied[window] & donor.mask).any():  # clear of every nucleus and its gap
                break
        else:
            continue
        instance = len(inst_type) + 1
        inst_map[window][donor.mask] = instance
        inst_type.append(donor.type)
        # Grow the occupied area by the gap around the new nucleus, in a window padded by it.
        padded = (
            slice(max(top - gap, 0), min(top + rows + gap, height)),
            slice(max(left - gap, 0), min(left + cols + gap, width)),
        )
        own = inst_map[padded] == instance
        occupied[padded] |= ndimage.binary_dilation(own, iterations=gap) if gap else own
        edits.append(Edit(instance, 0, 0, donor.tile, donor.instance, donor.type, donor.area))
    return relabel(inst_map, np.asarray(inst_type, dtype=np.uint8)), edits


def load_tile(prepared_dir: str | Path, tile: str) -> tuple[LabelMap, np.ndarray]:
    """A prepared tile's labels and its centroids as stored in the label file."""
    with np.load(Path(prepared_dir) / "tiles" / f"{tile}.npz") as data:
        return LabelMap(data["inst_map"], data["inst_type"]), data["inst_centroid"]


def make_virtual_maps(
    prepared_dir: str | Path,
    splits: dict,
    fold: int,
    kind: str,
    settings: dict,
    seed: int,
    blended: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, LabelMap], pd.DataFrame]:
    """The virtual map of ``kind`` (``balancing`` or ``enlarging``) of every training tile
    of the fold, with donors from those tiles only (never a validation or test tile);
    returns the maps and one row per edit. Given a ``blended`` dict and balancing maps, it
    also fills in each tile's GradMix image (:class:`GradMixImage`)."""
    training_tiles = splits["folds"][fold]["train"]
    tiles = {name: load_tile(prepared_dir, name) for name in training_tiles}
    images = {}
    if blended is not None and kind == "balancing":
        for name in training_tiles:
            with np.load(Path(prepared_dir) / "tiles" / f"{name}.npz") as data:
                images[name] = data["image"]
    inst_maps = {name: labels.inst_map for name, (labels, _) in tiles.items()}
    rare = settings["rare_class"]
    if kind == "balancing":
        donors = {
            name: nuclei(name, labels, centroids, {rare}, settings["border_px"])
            for name, (labels, centroids) in tiles.items()
        }
    elif kind == "enlarging":
        donors = {
            name: nuclei(name, labels, centroids, set(np.unique(labels.inst_type).tolist()) - {0}, 0.0, whole=True)
            for name, (labels, centroids) in tiles.items()
        }
    else:
        raise ValueError(f"unknown virtual map kind {kind!r} (balancing or enlarging)")
    maps, rows = {}, []
    for index, (name, (labels, centroids)) in enumerate(tiles.items()):
        rng = np.random.default_rng([seed, index])
        if kind == "balancing":
            image = GradMixImage(images[name], labels, images, inst_maps) if images else None
            maps[name], edits = balancing_map(name, labels, centroids, donors, rng, settings, image)
            if image is not None:
                blended[name] = image.final
        else:
            maps[name], edits = enlarging_map(name, labels, donors, rng, settings["enlarging"])
        rows += [{"tile": name, **edit.__dict__} for edit in edits]
    columns = ["tile", *Edit.__dataclass_fields__]
    return maps, pd.DataFrame(rows, columns=columns)


def class_counts(maps: dict[str, LabelMap], classes: list[int]) -> dict[str, int]:
    counts = {str(c): 0 for c in classes}
    for labels in maps.values():
        for c, n in labels.class_counts(classes).items():
            counts[str(c)] += n
    return counts


def _write_maps(job: Job) -> dict:
    settings = job.settings
    prepared = Path(job.inputs["prepared"])
    meta = read_json(prepared / "meta.json")
    splits = read_json(job.inputs["splits"])
    kind = job.wildcards["map_kind"]
    if meta["rare_class"] != settings["rare_class"]:
        log.info("rare class %s (config) while the prepared data marks %s", settings["rare_class"], meta["rare_class"])
    blended: dict[str, np.ndarray] = {}
    maps, edits = make_virtual_maps(prepared, splits, 0, kind, settings, keyed_seed(settings["seed"], kind), blended)
    classes = sorted(int(c) for c in meta["labels"] if int(c) != 0)
    real = {name: load_tile(prepared, name)[0] for name in maps}
    record = {
        "dataset": job.wildcards["dataset"],
        "map_kind": kind,
        "tiles": sorted(maps),
        "rare_class": settings["rare_class"],
        "labels": meta["labels"],
        "real": class_counts(real, classes),
        "virtual": class_counts(maps, classes),
        "edits": len(edits),
    }
    with atomic_output(job.outputs["maps"], directory=True) as tmp:
        for name, labels in maps.items():
            np.savez_compressed(
                tmp / f"{name}.npz",
                inst_map=labels.inst_map,
                type_map=labels.type_map(),
                inst_type=labels.inst_type,
                inst_centroid=labels.centroids(),
                **({"image": blended[name]} if name in blended else {}),  # the GradMix image
            )
        edits.to_csv(tmp / "edits.tsv", sep="\t", index=False)
        write_json(tmp / "counts.json", record)
    rare = str(settings["rare_class"])
    log.info(
        "%s maps of %d tiles: %d edits; rare class %s nuclei %d -> %d of %d -> %d",
        kind,
        len(maps),
        len(edits),
        rare,
        record["real"][rare],
        record["virtual"][rare],
        sum(record["real"].values()),
        sum(record["virtual"].values()),
    )
    return record


LABEL_MAPS = Stage(stages.LABEL_MAPS, _write_maps)
label_maps_entry = LABEL_MAPS.entry
