"""Resumable diffusion training loop shared by the three papers.

One optimiser update ("step") is ``gradient_accumulation_steps`` micro-batches. Mixed
precision is bf16/fp16 autocast on CUDA and plain fp32 on CPU; trainable weights stay
fp32 throughout. An EMA of the trainable weights is kept and is what gets exported.

Checkpoints live in ``state_dir/checkpoint-{step}/``, outside the rule's declared outputs
so that Snakemake's clean-up of a failed job cannot delete them; a restarted run resumes
from the newest one and, because ``make_batch`` is deterministic in the micro-step index
and all RNG states are restored, continues exactly as an uninterrupted run would (on CPU;
CUDA kernels are not bit-reproducible). Each checkpoint holds:

- ``models/<name>/``: ``save_pretrained`` weights of every trainable model,
- ``ema/<name>.safetensors``: the EMA weights, keyed by parameter name,
- ``optimizer.pt``, ``scaler.pt``, ``rng.pt``: optimiser, grad-scaler and RNG states,
- ``training_state.json``: step, loss, EMA counters, settings and the run's fingerprint.
  Written last, so its presence marks a complete checkpoint.

A checkpoint resumes only the run that wrote it: its fingerprint covers every training
setting that shapes the weights (all of :class:`TrainingSettings` but the step count and
the checkpoint bookkeeping) and the caller's ``identity`` (model settings, training data).
A run whose fingerprint differs says which keys changed and starts afresh.

The layout follows diffusers' ``examples/controlnet/train_controlnet.py``
(``--checkpointing_steps``, ``--checkpoints_total_limit``, ``--resume_from_checkpoint
latest``) without needing ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from medaug.errors import MedaugError
from medaug.io import atomic_output

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"checkpoint-(\d+)")
STATE_FILE = "training_state.json"
PRECISIONS = ("auto", "no", "fp16", "bf16")


@dataclass
class TrainingSettings:
    max_steps: int
    learning_rate: float
    gradient_accumulation_steps: int = 1
    # "auto": bf16 on CUDA where supported, else fp16; fp32 on CPU whatever is asked.
    mixed_precision: str = "auto"
    ema_decay: float | None = None  # None disables EMA (the papers' configs set it)
    # True: diffusers' warm-up (decay min(ema_decay, (1 + n) / (10 + n))); False: the constant
    # decay from the first update, as guided-diffusion (the EMA starts at the initial weights).
    ema_warmup: bool = True
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0  # AdamW
    # "constant" (ControlNet's and the papers' training) or "cosine": decay to 0 at max_steps.
    lr_schedule: str = "constant"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.max_steps < 1:
            problems.append(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.gradient_accumulation_steps < 1:
            problems.append(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.mixed_precision not in PRECISIONS:
            problems.append(f"mixed_precision must be one of {PRECISIONS}, got {self.mixed_precision!r}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.checkpointing_steps < 1:
            problems.append(f"checkpointing_steps must be >= 1, got {self.checkpointing_steps}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            problems.append(f"checkpoints_total_limit must be >= 1 or None, got {self.checkpoints_total_limit}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if problems:
            raise ValueError("invalid TrainingSettings: " + "; ".join(problems))


# --- checkpoints on disk --------------------------------------------------------------


def _checkpoints(state_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``state_dir``, oldest first."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return []
    found = []
    for path in state_dir.iterdir():
        match = CHECKPOINT_RE.fullmatch(path.name)
        # A folder without the state file was not finished (it is written last).
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(state_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-{step}`` folder in ``state_dir``, or None."""
    found = _checkpoints(state_dir)
    return found[-1][1] if found else None


def _remove_partials(state_dir: Path) -> None:
    # Left behind by a run killed while writing a checkpoint (atomic_output's temp folders).
    for path in state_dir.glob(".checkpoint-*.partial-*"):
        log.info("removing unfinished checkpoint %s", path.name)
        shutil.rmtree(path, ignore_errors=True)


def _prune(state_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    found = _checkpoints(state_dir)
    for _, path in found[: max(0, len(found) - limit)]:
        log.info("removing old checkpoint %s (checkpoints_total_limit=%d)", path.name, limit)
        shutil.rmtree(path)


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_at(settings: TrainingSettings, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a pure function of the step, so
    a resumed run continues the schedule without saving scheduler state."""
    if settings.lr_schedule == "cosine":
        return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * step / settings.max_steps))
    return settings.learning_rate


# Settings that say how long to train or how to keep checkpoints, not what is trained: a
# run that only raises max_steps continues the same trajectory.
NOT_SHAPING = ("max_steps", "checkpointing_steps", "checkpoints_total_limit")


def run_identity(settings: TrainingSettings, identity: Mapping | None) -> dict:
    """What makes two runs the same run: the shaping training settings and ``identity``.
    A decaying learning rate makes ``max_steps`` shaping too: it sets the rate of every step."""
    kept = ("max_steps",) if settings.lr_schedule != "constant" else ()
    training = {k: v for k, v in asdict(settings).items() if k not in NOT_SHAPING or k in kept}
    return json.loads(json.dumps({"training": training, **dict(identity or {})}, sort_keys=True, default=str))


def fingerprint(identity: Mapping) -> str:
    """A short content hash of a JSON-able identity."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def changed_keys(old: Mapping, new: Mapping) -> list[str]:
    """The dotted keys whose values differ between two identities."""
    old_flat, new_flat = _flat(dict(old)), _flat(dict(new))
    absent = object()
    return sorted(k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k, absent) != new_flat.get(k, absent))


def _discard_other_runs(state_dir: Path, identity: dict, max_steps: int) -> None:
    """Remove checkpoints that another identity wrote, or that are past ``max_steps``, saying
    why, so that no run ever resumes from, or exports, weights trained otherwise."""
    found = _checkpoints(state_dir)
    if not found:
        return
    newest_step, newest = found[-1]
    old = json.loads((newest / STATE_FILE).read_text()).get("identity")
    if old is None:
        why = "it has no fingerprint"
    elif fingerprint(old) != fingerprint(identity):
        why = "changed: " + ", ".join(changed_keys(old, identity))
    elif newest_step > max_steps:
        why = f"it is past max_steps={max_steps}"
    else:
        return
    log.warning("not resuming from %s (%s): starting afresh", newest.name, why)
    for _, path in found:
        shutil.rmtree(path)


def _rng_state() -> dict:
    # Plain tensors, ints and lists only, so that torch.load(weights_only=True) reads it back.
    version, mt_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, mt_state, gauss_next = state["python"]
    random.setstate((version, tuple(mt_state), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine %d: not restored",
                len(state["cuda"]),
                torch.cuda.device_count(),
            )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load ``save_pretrained`` safetensors (possibly sharded) into ``model`` in place.

    In place rather than ``from_pretrained`` so that the caller's model object, already on
    its device and referenced by the optimiser, stays the one being trained.
    """
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MedaugError(f"{folder}: no .safetensors weights in this checkpoint")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(load_file(file))
    # transformers drops tied weights from its files; diffusers models must match exactly.
    from diffusers import ModelMixin

    strict = isinstance(model, ModelMixin)
    missing, unexpected = model.load_state_dict(state, strict=strict)
    if unexpected:
        raise MedaugError(f"{folder}: weights do not fit the model (unexpected keys {unexpected[:5]} ...)")
    if missing:
        log.warning("%s: keys not in the checkpoint (tied weights?): %s", folder, missing[:5])


class _Ema:
    """Exponential moving average of a model's parameters.

    With ``warmup`` the decay warms up as in diffusers' ``EMAModel`` (the default of its
    training examples): ``min(decay, (1 + n) / (10 + n))`` at update ``n + 1``, the first
    update copying the weights, so that the EMA is useful after short runs too. Without,
    every update uses ``decay`` and the EMA starts at the weights training starts from
    (guided-diffusion's ``update_ema``). Own code rather than
    ``EMAModel`` to keep shadow weights keyed by parameter name (safe to save and swap in)
    and to avoid importing transformers.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.optimization_step = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.optimization_step - 1
        return 0.0 if n <= 0 else min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def step(self, model: torch.nn.Module) -> None:
        self.optimization_step += 1
        named = dict(model.named_parameters())
        shadows = list(self.shadow.values())
        params = [named[name].detach() for name in self.shadow]
        # shadow += (1 - decay) * (param - shadow), one fused call over all tensors.
        torch._foreach_lerp_(shadows, params, 1.0 - self.current_decay())

    def state(self) -> dict:
        return {"decay": self.decay, "optimization_step": self.optimization_step}

    def load(self, state: dict, shadow: dict[str, torch.Tensor]) -> None:
        if shadow.keys() != self.shadow.keys():
            raise MedaugError(f"EMA weights do not fit the model ({sorted(set(shadow) ^ set(self.shadow))[:5]} ...)")
        self.optimization_step = int(state["optimization_step"])
        self.shadow = {name: shadow[name].to(self.shadow[name]) for name in self.shadow}


@contextlib.contextmanager
def _swapped_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily copy ``weights`` into ``model``'s parameters; the originals return on exit."""
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(weights))
    if missing:
        raise MedaugError(f"EMA weights lack parameters of the model: {missing[:5]}")
    # Back-ups on the CPU: a second copy of a large model on the GPU may not fit.
    backup = {name: p.detach().to("cpu", copy=True) for name, p in params.items()}
    try:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(backup[name])


def _save_checkpoint(
    state_dir: Path,
    step: int,
    models: dict[str, torch.nn.Module],
    trainable: list[str],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    emas: dict[str, _Ema],
    loss: float | None,
    settings: TrainingSettings,
    precision: str,
    identity: dict,
) -> Path:
    from safetensors.torch import save_file

    target = state_dir / f"checkpoint-{step}"
    # atomic_output writes into a temp sibling and renames on success: a run killed mid-write
    # leaves only a ".checkpoint-*.partial-*" folder, never a corrupt "latest" checkpoint.
    with atomic_output(target, directory=True) as tmp:
        for name in trainable:
            models[name].save_pretrained(tmp / "models" / name)
        if emas:
            (tmp / "ema").mkdir()
        for name, ema in emas.items():
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, tmp / "ema" / f"{name}.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        state = {
            "step": step,
            "loss": loss,
            "mixed_precision": precision,
            "ema": {name: ema.state() for name, ema in emas.items()},
            "settings": asdict(settings),
            "fingerprint": fingerprint(identity),
            "identity": identity,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    return target


def _load_checkpoint(
    path: Path,
    models: dict[str, torch.nn.Module],
    trainable: list[str],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    emas: dict[str, _Ema],
    settings: TrainingSettings,
    device: torch.device,
) -> dict:
    from safetensors.torch import load_file

    state = json.loads((path / STATE_FILE).read_text())
    for name in trainable:
        _load_weights(models[name], path / "models" / name)
    for name, ema in emas.items():
        file = path / "ema" / f"{name}.safetensors"
        if not file.is_file():
            log.warning("%s has no EMA weights for %s: the EMA restarts from the current weights", path.name, name)
            continue
        ema.load(state["ema"][name], load_file(file, device=str(device)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    scaler_state = torch.load(path / "scaler.pt", weights_only=True)
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    _set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return state


# --- the loop --------------------------------------------------------------------------


def resolve_mixed_precision(requested: str, device: torch.device, bf16_supported: bool | None = None) -> str:
    """The precision actually used: "no" (fp32), "fp16" or "bf16"."""
    if requested not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS}, got {requested!r}")
    if device.type != "cuda":
        if requested in ("fp16", "bf16"):
            log.info("mixed_precision=%s ignored on %s: training in fp32", requested, device.type)
        return "no"
    if requested == "auto":
        if bf16_supported is None:
            bf16_supported = torch.cuda.is_bf16_supported()
        return "bf16" if bf16_supported else "fp16"
    return requested


def _to_device(batch: object, device: torch.device) -> object:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(value, device) for value in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def train(
    models: dict[str, torch.nn.Module],
    trainable: list[str],
    loss_fn: Callable[[dict[str, torch.nn.Module], object], torch.Tensor],
    make_batch: Callable[[int], object],
    settings: TrainingSettings,
    state_dir: str | Path,
    device: str | torch.device = "cpu",
    progress_desc: str = "train",
    identity: Mapping | None = None,
) -> dict:
    """Train ``models[trainable]`` to ``settings.max_steps`` optimiser steps, resuming from
    the newest checkpoint in ``state_dir`` when there is one.

    ``loss_fn(models, batch)`` returns a scalar loss; ``make_batch(i)`` returns the batch of
    global micro-step ``i`` (on the CPU; moved to ``device`` here) and must be deterministic
    in ``i`` so that a resumed run sees the same data. Models not in ``trainable`` are
    frozen (eval mode, ``requires_grad`` off). All models are moved to ``device``. On return
    the trainable models hold the raw (non-EMA) final weights; use :func:`export_models` to
    save the EMA weights.

    ``identity`` is what else makes this run this run (JSON-able): the model's settings and
    a digest of the training data. Checkpoints of another identity are discarded, never
    resumed.

    Returns a summary: steps, steps_run, resumed_from, final_loss, wall_s, steps_per_s,
    device, mixed_precision, peak_gpu_mem_mb (None off CUDA) and checkpoint (its path).
    """
    started = time.perf_counter()
    device = torch.device(device)
    state_dir = Path(state_dir)
    unknown = [name for name in trainable if name not in models]
    if unknown or not trainable:
        raise ValueError(f"trainable must name models in {sorted(models)}, got {trainable}")
    precision = resolve_mixed_precision(settings.mixed_precision, device)
    accumulation = settings.gradient_accumulation_steps

    state_dir.mkdir(parents=True, exist_ok=True)
    _remove_partials(state_dir)
    _seed_everything(settings.seed)
    for name, model in models.items():
        model.to(device)
        if name in trainable:
            model.train()
        else:
            model.eval()
            model.requires_grad_(False)
    # Parameters a caller froze inside a trainable model (requires_grad False) stay frozen.
    params = [p for name in trainable for p in models[name].parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"the trainable models {trainable} have no parameters with requires_grad=True")
    if any(p.dtype != torch.float32 for p in params):
        # Mixed precision keeps fp32 master weights; half-precision ones break the GradScaler.
        raise ValueError("trainable parameters must be float32 (mixed precision is applied by autocast)")
    # fused: the same update in one kernel over all tensors; the default per-tensor loop
    # is a large share of a demo step on CPU.
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    emas: dict[str, _Ema] = {}
    if settings.ema_decay is not None:
        emas = {name: _Ema(models[name], settings.ema_decay, settings.ema_warmup) for name in trainable}

    identity = run_identity(settings, identity)
    _discard_other_runs(state_dir, identity, settings.max_steps)
    start_step, resumed_from, last_loss = 0, None, None
    checkpoint = latest_checkpoint(state_dir)
    if checkpoint is not None:
        log.info("resuming from %s", checkpoint.name)
        state = _load_checkpoint(checkpoint, models, trainable, optimizer, scaler, emas, settings, device)
        start_step = resumed_from = state["step"]
        last_loss = state.get("loss")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log.info(
        "training %s on %s (%s) from step %d to %d, %d micro-batch(es) per step",
        ", ".join(trainable),
        device,
        "fp32" if precision == "no" else precision,
        start_step,
        settings.max_steps,
        accumulation,
    )

    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
        if precision != "no"
        else contextlib.nullcontext()
    )
    # In a log file (not a terminal) tqdm writes one line per refresh: keep those few.
    mininterval = 0.5 if sys.stderr.isatty() else 30.0
    progress = tqdm(
        total=settings.max_steps,
        initial=start_step,
        desc=progress_desc,
        dynamic_ncols=True,
        mininterval=mininterval,
    )
    loop_started = time.perf_counter()
    step = start_step
    optimizer.zero_grad(set_to_none=True)
    with progress:
        while step < settings.max_steps:
            total = torch.zeros((), device=device)
            for micro in range(accumulation):
                batch = _to_device(make_batch(step * accumulation + micro), device)
                with autocast:
                    loss = loss_fn(models, batch)
                if loss.ndim != 0:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                # Averaged over micro-batches so the update matches one batch of the combined size.
                scaler.scale(loss / accumulation).backward()
                total += loss.detach().float()
            last_loss = total.item() / accumulation
            if not math.isfinite(last_loss):
                if precision != "fp16":
                    raise MedaugError(f"training diverged: loss is {last_loss} at step {step + 1}")
                # Under fp16 an overflow is expected now and then: the scaler skips the update.
                log.warning("non-finite loss at step %d (fp16): the grad scaler skips this update", step + 1)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(settings, step)
            if settings.max_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            for name, ema in emas.items():
                ema.step(models[name])
            step += 1
            progress.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
            progress.update(1)
            if step % settings.checkpointing_steps == 0 or step == settings.max_steps:
                saved = _save_checkpoint(
                    state_dir,
                    step,
                    models,
                    trainable,
                    optimizer,
                    scaler,
                    emas,
                    last_loss,
                    settings,
                    precision,
                    identity,
                )
                _prune(state_dir, settings.checkpoints_total_limit)
                log.info("step %d/%d loss %.4g: saved %s", step, settings.max_steps, last_loss, saved.name)
    loop_s = time.perf_counter() - loop_started
    steps_run = step - start_step
    summary = {
        "steps": step,
        "steps_run": steps_run,
        "resumed_from": resumed_from,
        "final_loss": last_loss,
        "wall_s": round(time.perf_counter() - started, 3),
        "steps_per_s": round(steps_run / loop_s, 4) if steps_run and loop_s > 0 else None,
        "device": str(device),
        "mixed_precision": precision,
        "peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "checkpoint": str(latest_checkpoint(state_dir)),
        "fingerprint": fingerprint(identity),
    }
    log.info("training done: %s", summary)
    return summary


def export_models(
    models: dict[str, torch.nn.Module],
    names: list[str],
    out_dir: str | Path,
    state_dir: str | Path | None = None,
) -> None:
    """``save_pretrained`` each named model into ``out_dir/<name>/``, each folder written
    atomically.

    Other contents of ``out_dir`` are left alone, so a caller can export into the temp
    folder of its own ``atomic_output`` next to further files (tokenizer, scheduler,
    metadata) and have the whole model folder appear at once.

    Where the newest checkpoint in ``state_dir`` holds EMA weights for a model, those are
    exported (the in-memory model keeps its own weights); otherwise, and for frozen
    models, the model's current weights are.
    """
    from safetensors.torch import load_file

    checkpoint = latest_checkpoint(state_dir) if state_dir is not None else None
    unknown = [name for name in names if name not in models]
    if unknown:
        raise ValueError(f"cannot export {unknown}: not in {sorted(models)}")
    for name in names:
        model = models[name]
        ema_file = checkpoint / "ema" / f"{name}.safetensors" if checkpoint is not None else None
        with atomic_output(Path(out_dir) / name, directory=True) as tmp:
            if ema_file is not None and ema_file.is_file():
                device = next(model.parameters()).device
                with _swapped_weights(model, load_file(ema_file, device=str(device))):
                    model.save_pretrained(tmp)
                log.info("exported %s: EMA weights of %s", name, checkpoint.name)
            else:
                model.save_pretrained(tmp)
                log.info("exported %s: current weights (no EMA weights for it)", name)
