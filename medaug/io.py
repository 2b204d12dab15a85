"""File helpers: atomic outputs and image/table I/O that fail with the file's name."""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medaug.errors import DatasetError, disk_full, is_disk_full


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_output(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` that replaces ``path`` only on success.

    A job that fails half-way leaves neither a half-written file nor a half-filled
    folder behind, whether it runs under Snakemake or standalone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A job killed outright (SIGKILL, a SLURM time limit) leaves its partial sibling behind:
    # remove those of this host whose process is gone. A live one may be another process's
    # (two Snakemake processes refresh the same manifest), and one of another host cannot be
    # checked from here.
    host = socket.gethostname()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial-{glob.escape(host)}-*"):
        if not _process_alive(stale.name.rpartition("-")[2]):
            _remove(stale)
    tmp = path.parent / f".{path.name}.partial-{host}-{os.getpid()}"
    if directory:
        tmp.mkdir()
    try:
        yield tmp
    except BaseException as exc:
        _remove(tmp)
        if is_disk_full(exc):
            raise disk_full(path) from None
        raise
    _remove(path)
    os.replace(tmp, path)


def _process_alive(pid: str) -> bool:
    """Whether process ``pid`` (a decimal string) runs on this host."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def file_stamps(paths) -> list[list]:
    """(path, size, modification time) of every file under ``paths`` (files or folders,
    hidden ones included), sorted: what identifies a job's inputs to a resumed run, without
    reading them."""
    stamps = []
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            stamps.append([str(file), stat.st_size, stat.st_mtime_ns])
    return stamps


def write_json(path: str | Path, data: object) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> object:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(path, f"not valid JSON ({exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/TIFF/JPEG as an array (H×W or H×W×C) on the 0..255 scale, naming the file
    on failure (see ``to_8bit_scale``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "1"):
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"unreadable or corrupt image ({exc})") from None
    return to_8bit_scale(pixels, path)


# Bit depths that scanners and exports write into 16-bit containers (12-bit ultrasound and
# CT, 10- and 14-bit detectors).
BIT_DEPTHS = (8, 10, 12, 14, 16)


def to_8bit_scale(pixels: np.ndarray, path: str | Path) -> np.ndarray:
    """``pixels`` on the 0..255 scale every later step assumes, whatever the file's type.

    8-bit images are returned as they are. Deeper integer images are divided by the top of
    the smallest bit depth in ``BIT_DEPTHS`` (else their type's) that holds their maximum:
    a 16-bit export keeps its relative intensities, a 12-bit scan in a 16-bit PNG keeps its
    contrast, and 8-bit values in a wider type stay as they are. Float images are taken as
    0..1 or 0..255, whichever holds them; anything else (negative, NaN, beyond 255) is an
    error naming the file, never a clipped or constant image.
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    if np.issubdtype(pixels.dtype, np.floating):
        bad = pixels.size - int(np.count_nonzero(np.isfinite(pixels)))
        if bad:
            raise DatasetError(path, f"{bad} non-finite (NaN or inf) pixels out of {pixels.size}")
        low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
        if low >= 0 and high <= 1:
            return pixels.astype(np.float32) * 255
        if low >= 0 and high <= 255:
            return pixels.astype(np.float32)
        expected = "expected 0..1 or 0..255 (or save it as 8- or 16-bit integers)"
        raise DatasetError(path, f"float pixels from {low:g} to {high:g}; {expected}")
    if not np.issubdtype(pixels.dtype, np.integer):
        raise DatasetError(path, f"pixels of type {pixels.dtype}, expected integers or floats")
    low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    if low < 0:
        raise DatasetError(path, f"negative pixel values (minimum {low}) in a {pixels.dtype} image; expected >= 0")
    bits = next((b for b in BIT_DEPTHS if high < 2**b), None)
    top = 2**bits - 1 if bits is not None else np.iinfo(pixels.dtype).max
    if bits == 8:
        return pixels.astype(np.float32)
    return (pixels.astype(np.float64) * (255.0 / top)).astype(np.float32)


# Luminance weights of R, G, B: ITU-R 601 (PIL's convert("L")) and ITU-R 709 (skimage's
# rgb2gray, which the official BUSI preprocessing uses).
ITU_601 = (0.299, 0.587, 0.114)
SKIMAGE = (0.2125, 0.7154, 0.0721)


def to_gray(image: np.ndarray, path: str | Path, weights: tuple[float, float, float] = ITU_601) -> np.ndarray:
    """Collapse RGB(A) to luminance with ``weights``; keep 2D as is."""
    if image.ndim == 2:
        return image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image[..., :3].astype(np.float32)
        return rgb @ np.array(weights, dtype=np.float32)
    raise DatasetError(path, f"expected a 2D grey or RGB image, got array shape {image.shape}")


def write_png(path: str | Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG")
