"""Dataset manifests: the content of a dataset folder as one file Snakemake can watch.

Snakemake sees a dataset root only as a folder, whose time stamp changes when an entry is
added or removed but not when a file inside is replaced or repaired. The manifest lists
every file under the root with its size and content hash, and is rewritten only when that
list changes; the preparation stage takes it as an input, so exactly the datasets whose
files changed are prepared again. Hashing is cached by (size, mtime) in a sibling stat
file, so an unchanged dataset costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from medaug import paths
from medaug.datasets.base import folder_entries
from medaug.errors import DatasetError
from medaug.io import atomic_output
from medaug.paths import fill
from medaug.stage import Job, Spec, Stage

log = logging.getLogger(__name__)


def _stat_cache_path(manifest: Path) -> Path:
    return manifest.with_name(f".{manifest.stem}.stat.json")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _files(root: Path) -> list[Path]:
    """Every file under ``root``, following links, OS clutter (``.DS_Store``, ``._*``,
    ``__MACOSX``, unfinished writes) left out. A broken link, a link loop or an unreadable
    folder is an error of this dataset that names it."""
    found: list[Path] = []

    def walk(folder: Path, ancestors: frozenset[Path]) -> None:
        try:
            entries = folder_entries(folder)
        except OSError as exc:
            raise DatasetError(folder, f"folder cannot be read ({exc.strerror or exc})") from None
        for entry in entries:
            if entry.is_symlink():
                try:
                    entry.resolve(strict=True)
                except FileNotFoundError:
                    raise DatasetError(entry, f"broken symbolic link (points to {os.readlink(entry)})") from None
                except (RuntimeError, OSError):
                    raise DatasetError(entry, "symbolic link loop") from None
            if entry.is_dir():
                real = entry.resolve()
                if real in ancestors:
                    raise DatasetError(entry, f"symbolic link loop (leads back to {real})")
                walk(entry, ancestors | {real})
            elif entry.is_file():
                found.append(entry)

    walk(root, frozenset({root.resolve()}))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def update_manifest(root: str | Path, manifest: str | Path) -> bool:
    """Write ``manifest`` for the files under ``root`` unless it already says the same;
    return whether it was (re)written."""
    root, manifest = Path(root), Path(manifest)
    cache_path = _stat_cache_path(manifest)
    cache = _read(cache_path) if manifest.is_file() else {}
    files, stats = {}, {}
    for path in _files(root):
        relative = path.relative_to(root).as_posix()
        stat = path.stat()
        key = [stat.st_size, stat.st_mtime_ns]
        cached = cache.get(relative)
        digest = cached[2] if cached and cached[:2] == key else _sha256(path)
        files[relative] = {"size": stat.st_size, "sha256": digest}
        stats[relative] = [*key, digest]
    content = {"root": str(root), "files": files}
    changed = _read(manifest) != content
    if changed:
        with atomic_output(manifest) as tmp:
            tmp.write_text(json.dumps(content, indent=1) + "\n")
        log.info("%s: %d files listed", manifest, len(files))
    if changed or stats != cache:
        with atomic_output(cache_path) as tmp:
            tmp.write_text(json.dumps(stats) + "\n")
    return changed


def refresh_manifests(config: dict, datasets: list[str]) -> list[str]:
    """Bring the existing manifests of ``datasets`` up to date with their folders (the
    Snakefile calls this on every run, before Snakemake compares time stamps); a missing
    manifest is left to the ``list_dataset_files`` rule, and a folder that cannot be listed
    (a broken link, say) gets a manifest that records why. Returns the datasets whose
    manifest changed."""
    changed = []
    for name in datasets:
        root = Path(config["datasets"][name]["root"])
        manifest = Path(fill(paths.MANIFEST, dataset=name))
        if not (manifest.is_file() and root.is_dir()):
            continue
        try:
            if update_manifest(root, manifest):
                changed.append(name)
        except DatasetError as error:
            # Only this dataset's jobs may fail: the manifest records the problem (which
            # reruns its preparation, where it is reported) and every other job still plans.
            log.warning("dataset '%s' cannot be listed: %s", name, error)
            content = {"root": str(root), "error": {"path": str(error.path), "problem": error.problem}}
            if _read(manifest) != content:
                with atomic_output(manifest) as tmp:
                    tmp.write_text(json.dumps(content, indent=1) + "\n")
                changed.append(name)
    return changed


def check_listing(manifest: str | Path) -> None:
    """Raise the problem a manifest records instead of its files (see ``refresh_manifests``)."""
    error = _read(Path(manifest)).get("error")
    if error:
        raise DatasetError(error["path"], error["problem"])


def _list(job: Job) -> None:
    update_manifest(job.inputs["root"], job.outputs["manifest"])


MANIFEST = Stage(
    Spec(
        name="list_dataset_files",
        description="List every file of a dataset with its size and content hash, so that a changed "
        "file reruns what depends on that dataset.",
        wildcards=("dataset",),
        inputs=lambda config, w: {"root": config["datasets"][w["dataset"]]["root"]},
        outputs=lambda config, w: {"manifest": fill(paths.MANIFEST, **w)},
    ),
    _list,
)
list_files_entry = MANIFEST.entry
