import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, DDPMScheduler, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from safetensors.torch import load_file

from medaug.diffusion.training import (
    TrainingSettings,
    export_models,
    latest_checkpoint,
    learning_rate_at,
    resolve_mixed_precision,
    train,
)
from medaug.errors import MedaugError

from .conftest import tiny_unet

REPO = Path(__file__).resolve().parent.parent
NOISE = DDPMScheduler(num_train_timesteps=100)


def unet_loss(models, batch):
    # Draws noise and timesteps from the global RNG, as the real losses do: resuming must restore it.
    noise = torch.randn_like(batch)
    t = torch.randint(0, NOISE.config.num_train_timesteps, (batch.shape[0],))
    return F.mse_loss(models["unet"](NOISE.add_noise(batch, noise, t), t).sample, noise)


def image_batch(index: int) -> torch.Tensor:
    return torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(index))


class TinyLinear(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, features: int = 4):
        super().__init__()
        self.linear = torch.nn.Linear(features, 1)

    def forward(self, x):
        return self.linear(x)


def settings(**changes) -> TrainingSettings:
    base = {"max_steps": 6, "learning_rate": 1e-3, "ema_decay": 0.5, "checkpointing_steps": 2}
    return TrainingSettings(**{**base, **changes})


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def assert_same(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), name


def differs(a: dict, b: dict) -> bool:
    return any(not torch.allclose(a[name], b[name], rtol=0, atol=1e-7) for name in a)


def linear_setup(**changes):
    models = {"net": TinyLinear()}

    def loss(models, batch):
        x, y = batch
        return F.mse_loss(models["net"](x), y)

    def make_batch(index):
        g = torch.Generator().manual_seed(index)
        return torch.randn(4, 4, generator=g), torch.randn(4, 1, generator=g)

    return models, loss, make_batch, settings(**changes)


def test_checkpoints_keep_the_newest_and_export_loads(tmp_path):
    unet = tiny_unet()
    state = tmp_path / "state"
    summary = train({"unet": unet}, ["unet"], unet_loss, image_batch, settings(checkpoints_total_limit=2), state)
    assert sorted(p.name for p in state.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert summary["steps"] == 6 and summary["steps_run"] == 6 and summary["resumed_from"] is None
    assert summary["device"] == "cpu" and summary["mixed_precision"] == "no" and summary["peak_gpu_mem_mb"] is None
    assert 0 < summary["final_loss"] < 10 and summary["steps_per_s"] > 0
    checkpoint = latest_checkpoint(state)
    assert checkpoint == state / "checkpoint-6" and summary["checkpoint"] == str(checkpoint)
    for part in ("models/unet/config.json", "ema/unet.safetensors", "optimizer.pt", "scaler.pt", "rng.pt"):
        assert (checkpoint / part).is_file(), part
    assert json.loads((checkpoint / "training_state.json").read_text())["step"] == 6

    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "info.json").write_text("{}")  # the caller's own files stay
    export_models({"unet": unet}, ["unet"], tmp_path / "export", state)
    loaded = UNet2DModel.from_pretrained(tmp_path / "export" / "unet", local_files_only=True)
    assert list(loaded.config.block_out_channels) == [8, 16]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["info.json", "unet"], "no temp folders left"


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, caplog):
    straight = tiny_unet()
    train({"unet": straight}, ["unet"], unet_loss, image_batch, settings(), tmp_path / "straight")

    first = tiny_unet()
    train({"unet": first}, ["unet"], unet_loss, image_batch, settings(max_steps=4), tmp_path / "resumed")
    # A fresh process builds its model anew (here with other initial weights): the checkpoint must win.
    second = tiny_unet(seed=1)
    seen = []

    def make_batch(index):
        seen.append(index)
        return image_batch(index)

    caplog.set_level("INFO", logger="medaug")
    summary = train({"unet": second}, ["unet"], unet_loss, make_batch, settings(), tmp_path / "resumed")
    assert summary["resumed_from"] == 4 and summary["steps"] == 6 and summary["steps_run"] == 2
    assert seen == [4, 5]
    assert "resuming from checkpoint-4" in caplog.text
    assert_same(params(second), params(straight))
    # The EMA state resumes too: the exported (EMA) weights agree as well.
    export_models({"unet": straight}, ["unet"], tmp_path / "out_straight", tmp_path / "straight")
    export_models({"unet": second}, ["unet"], tmp_path / "out_resumed", tmp_path / "resumed")
    assert_same(
        load_file(tmp_path / "out_straight/unet/diffusion_pytorch_model.safetensors"),
        load_file(tmp_path / "out_resumed/unet/diffusion_pytorch_model.safetensors"),
    )

    # Asking again for the same number of steps trains nothing and keeps the weights.
    again = tiny_unet(seed=2)
    summary = train({"unet": again}, ["unet"], unet_loss, image_batch, settings(), tmp_path / "resumed")
    assert summary["resumed_from"] == 6 and summary["steps_run"] == 0
    assert_same(params(again), params(straight))


KILL_SCRIPT = """
import json, sys, time
from pathlib import Path

from medaug.diffusion.training import TrainingSettings, train
from medaug.logs import configure
from tests.test_diffusion_training import image_batch, tiny_unet, unet_loss

state, seen, summary = map(Path, sys.argv[1:4])
configure()


def make_batch(index):
    with seen.open("a") as handle:
        handle.write(f"{index}\\n")
    time.sleep(0.05)  # slow enough for the test to catch it between checkpoints
    return image_batch(index)


settings = TrainingSettings(max_steps=40, learning_rate=1e-3, checkpointing_steps=5, checkpoints_total_limit=2)
result = train({"unet": tiny_unet()}, ["unet"], unet_loss, make_batch, settings, state)
summary.write_text(json.dumps(result))
"""


def test_killed_run_resumes_from_its_newest_checkpoint(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(KILL_SCRIPT)
    state, summary = tmp_path / "state", tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def command(run: int) -> list[str]:
        return [sys.executable, str(script), str(state), str(tmp_path / f"seen{run}.txt"), str(summary)]

    with (tmp_path / "run1.log").open("w") as log1:
        process = subprocess.Popen(command(1), env=env, stdout=log1, stderr=subprocess.STDOUT, cwd=tmp_path)
        deadline = time.monotonic() + 120
        try:
            while latest_checkpoint(state) is None:
                assert process.poll() is None, (
                    "the run ended before its first checkpoint:\n" + (tmp_path / "run1.log").read_text()
                )
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL and not summary.exists()
    killed_at = int(latest_checkpoint(state).name.split("-")[1])
    assert killed_at < 40

    run2 = subprocess.run(command(2), env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run2.returncode == 0, run2.stderr
    assert f"resuming from checkpoint-{killed_at}" in run2.stderr
    result = json.loads(summary.read_text())
    assert result["resumed_from"] == killed_at and result["steps"] == 40

    seen1 = [int(line) for line in (tmp_path / "seen1.txt").read_text().split()]
    seen2 = [int(line) for line in (tmp_path / "seen2.txt").read_text().split()]
    assert seen2 == list(range(killed_at, 40))
    assert len(set(seen1) & set(seen2)) <= 5, "more than one checkpoint interval was redone"
    assert sorted(p.name for p in state.iterdir()) == ["checkpoint-35", "checkpoint-40"]


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    models, loss, make_full_batch, _ = linear_setup()
    frozen = TinyLinear()
    models["frozen"] = frozen
    frozen_before = params(frozen)

    def loss_with_frozen(models, batch):
        x, y = batch
        return loss(models, (x, y + models["frozen"](x)))

    calls = []

    def make_half_batch(index):
        calls.append(index)
        x, y = make_full_batch(index // 2)  # micro-batch k of step s is half k of step s's batch
        half = slice(0, 2) if index % 2 == 0 else slice(2, 4)
        return x[half], y[half]

    reference = {"net": TinyLinear(), "frozen": frozen}
    reference["net"].load_state_dict(models["net"].state_dict())  # same start, trained by hand below
    common = {"max_steps": 3, "ema_decay": None, "max_grad_norm": None, "learning_rate": 0.1}
    train(
        models,
        ["net"],
        loss_with_frozen,
        make_half_batch,
        settings(gradient_accumulation_steps=2, **common),
        tmp_path / "accumulated",
    )
    assert calls == list(range(6))
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert_same(params(frozen), frozen_before)

    # Three plain AdamW steps on the full batches: what two half batches per step must amount to.
    optimizer = torch.optim.AdamW(reference["net"].parameters(), lr=common["learning_rate"], weight_decay=0.0)
    for step in range(common["max_steps"]):
        optimizer.zero_grad()
        loss_with_frozen(reference, make_full_batch(step)).backward()
        optimizer.step()
    assert_same(params(models["net"]), params(reference["net"]))


def test_export_uses_ema_weights_only_when_ema_is_on(tmp_path):
    for decay in (0.5, None):
        unet = tiny_unet()
        state, out = tmp_path / f"state-{decay}", tmp_path / f"out-{decay}"
        train({"unet": unet}, ["unet"], unet_loss, image_batch, settings(max_steps=3, ema_decay=decay), state)
        raw = params(unet)
        export_models({"unet": unet}, ["unet"], out, state)
        exported = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
        assert_same(params(unet), raw)  # exporting must not leave EMA weights in the model
        if decay is None:
            assert not (latest_checkpoint(state) / "ema").exists()
            assert_same(exported, raw)
        else:
            assert differs(exported, raw)
            assert_same(exported, load_file(latest_checkpoint(state) / "ema" / "unet.safetensors"))


def test_ema_follows_the_warmed_up_decay(tmp_path):
    models, loss, make_batch, _ = linear_setup()
    net = models["net"]
    weights = []  # weights after each update, read when the next batch is made

    def recording(index):
        weights.append(params(net))
        return make_batch(index)

    train(models, ["net"], loss, recording, settings(max_steps=3, ema_decay=0.2), tmp_path / "state")
    weights = [*weights[1:], params(net)]
    expected = weights[0]  # the first update copies the weights
    for n, current in enumerate(weights[1:], start=1):
        decay = min(0.2, (1 + n) / (10 + n))
        expected = {k: decay * expected[k] + (1 - decay) * current[k] for k in expected}
    export_models(models, ["net"], tmp_path / "out", tmp_path / "state")
    assert_same(load_file(tmp_path / "out" / "net" / "diffusion_pytorch_model.safetensors"), expected)


def test_ema_without_warmup_uses_the_constant_decay_from_the_initial_weights(tmp_path):
    """guided-diffusion's EMA: it starts at the weights training starts from and every
    update uses the configured rate."""
    models, loss, make_batch, _ = linear_setup()
    net = models["net"]
    weights = []

    def recording(index):
        weights.append(params(net))
        return make_batch(index)

    no_warmup = settings(max_steps=3, ema_decay=0.2, ema_warmup=False)
    train(models, ["net"], loss, recording, no_warmup, tmp_path / "state")
    expected = weights[0]  # the initial weights
    for current in [*weights[1:], params(net)]:
        expected = {k: 0.2 * expected[k] + 0.8 * current[k] for k in expected}
    export_models(models, ["net"], tmp_path / "out", tmp_path / "state")
    assert_same(load_file(tmp_path / "out" / "net" / "diffusion_pytorch_model.safetensors"), expected)


def test_unfinished_checkpoints_are_ignored_and_cleaned(tmp_path):
    models, loss, make_batch, _ = linear_setup()
    state = tmp_path / "state"
    train(models, ["net"], loss, make_batch, settings(max_steps=2), state)
    (state / "checkpoint-4").mkdir()  # renamed but never finished (no training_state.json)
    (state / ".checkpoint-6.partial-12345").mkdir()  # a run killed while writing
    assert latest_checkpoint(state) == state / "checkpoint-2"

    summary = train(models, ["net"], loss, make_batch, settings(max_steps=4), state)
    assert summary["resumed_from"] == 2
    assert sorted(p.name for p in state.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert (state / "checkpoint-4" / "training_state.json").is_file()

    # Fewer steps than the newest checkpoint: that run cannot be cut back, so start afresh.
    summary = train(models, ["net"], loss, make_batch, settings(max_steps=3), state)
    assert summary["resumed_from"] is None and summary["steps_run"] == 3


def test_changed_settings_or_data_never_resume(tmp_path, caplog):
    models, loss, make_batch, _ = linear_setup()
    state = tmp_path / "state"
    data = {"data": "digest-a", "model": {"rotation_degrees": 20}}
    train(models, ["net"], loss, make_batch, settings(max_steps=4), state, identity=data)

    # Same run, more steps: resumes.
    summary = train(models, ["net"], loss, make_batch, settings(max_steps=6), state, identity=data)
    assert summary["resumed_from"] == 4

    cases = [
        (settings(max_steps=6, learning_rate=5e-3), data, "training.learning_rate"),
        (settings(max_steps=6), {**data, "model": {"rotation_degrees": 0}}, "model.rotation_degrees"),
        (settings(max_steps=6), {**data, "data": "digest-b"}, "data"),
    ]
    for changed, identity, key in cases:
        train(models, ["net"], loss, make_batch, settings(max_steps=6), state, identity=data)
        caplog.clear()
        summary = train(models, ["net"], loss, make_batch, changed, state, identity=identity)
        assert summary["resumed_from"] is None and summary["steps_run"] == 6, key
        assert f"not resuming from checkpoint-6 (changed: {key})" in caplog.text
        saved = json.loads((latest_checkpoint(state) / "training_state.json").read_text())
        assert saved["fingerprint"] == summary["fingerprint"]


def test_cosine_schedule_decays_to_zero_and_resumes_on_it(tmp_path, caplog):
    cosine = settings(lr_schedule="cosine", max_steps=4, learning_rate=1e-2)
    assert [learning_rate_at(cosine, k) for k in range(4)] == pytest.approx(
        [1e-2, 8.5355e-3, 5e-3, 1.4645e-3], rel=1e-4
    )
    assert learning_rate_at(settings(), 5) == 1e-3  # constant: the papers' training
    # Resumed on the schedule (as after a kill: the last checkpoint lost) gives the weights of
    # one uninterrupted run.
    straight, loss, make_batch, _ = linear_setup(lr_schedule="cosine")
    first = train(straight, ["net"], loss, make_batch, settings(lr_schedule="cosine"), tmp_path / "run")
    shutil.rmtree(latest_checkpoint(tmp_path / "run"))
    resumed, *_ = linear_setup()
    summary = train(resumed, ["net"], loss, make_batch, settings(lr_schedule="cosine"), tmp_path / "run")
    assert summary["resumed_from"] == 4 and summary["fingerprint"] == first["fingerprint"]
    assert_same(params(resumed["net"]), params(straight["net"]))
    # A cosine run's rates depend on max_steps: another max_steps is another run.
    caplog.set_level("INFO", logger="medaug")
    summary = train(resumed, ["net"], loss, make_batch, settings(lr_schedule="cosine", max_steps=8), tmp_path / "run")
    assert summary["resumed_from"] is None and "changed: training.max_steps" in caplog.text


def test_mixed_precision_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [resolve_mixed_precision(p, cpu) for p in ("auto", "no", "fp16", "bf16")] == ["no"] * 4
    assert resolve_mixed_precision("auto", cuda, bf16_supported=True) == "bf16"
    assert resolve_mixed_precision("auto", cuda, bf16_supported=False) == "fp16"
    assert resolve_mixed_precision("fp16", cuda, bf16_supported=True) == "fp16"
    assert resolve_mixed_precision("no", cuda, bf16_supported=True) == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        settings(mixed_precision="fp8")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        settings(gradient_accumulation_steps=0)


def test_bad_arguments_fail_early(tmp_path):
    models, loss, make_batch, _ = linear_setup()
    with pytest.raises(ValueError, match="trainable"):
        train(models, ["unet"], loss, make_batch, settings(), tmp_path / "state")
    with pytest.raises(ValueError, match="scalar"):
        train(models, ["net"], lambda m, b: m["net"](b[0]), make_batch, settings(), tmp_path / "state")
    with pytest.raises(MedaugError, match="diverged"):
        train(
            models, ["net"], lambda m, b: m["net"](b[0]).sum() * float("nan"), make_batch, settings(), tmp_path / "s2"
        )
