"""DDIM sampling with classifier-free guidance, shared by the three papers.

The model is hidden behind ``eps_fn(x_in, t) -> predicted noise`` so that one loop serves
an unconditional UNet, a class-conditional one and a ControlNet-guided Stable Diffusion
alike. With guidance, ``x_in`` is ``torch.cat([x, x])`` and ``eps_fn`` returns the
unconditional and the conditional prediction stacked in that order on dim 0, as diffusers
pipelines do, so one forward pass serves both.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def batched(n: int, batch_size: int) -> list[range]:
    """Index ranges that cover ``range(n)`` in batches of at most ``batch_size``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [range(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


def ddim_sample(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    scheduler,
    num_inference_steps: int,
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    eta: float = 0.0,
    init: torch.Tensor | None = None,
    start_step: int = 0,
    use_clipped_model_output: bool = False,
) -> torch.Tensor:
    """Run the reverse process from noise (or ``init``) and return the final sample.

    ``scheduler`` is a diffusers ``DDIMScheduler`` (or one built from a compatible config);
    ``set_timesteps(num_inference_steps)`` is called on it, so do not share one instance
    between concurrent loops. ``guidance_scale <= 1`` disables classifier-free guidance
    (``eps_fn`` then sees ``x`` alone); above 1 the two predictions are combined as
    ``eps_u + s * (eps_c - eps_u)``. ``generator`` draws the start noise and, for
    ``eta > 0``, the DDIM variance noise.

    ``init`` replaces the start noise; with ``start_step = k`` the first ``k`` of the
    ``num_inference_steps`` timesteps are skipped (SDEdit: ``init`` must then already be
    noised to ``scheduler.timesteps[k]``, which is the caller's job).

    ``use_clipped_model_output`` re-derives the noise from the clipped x0 prediction before
    each update (guided-diffusion's DDIM, with a scheduler that clips its samples).

    Runs under ``torch.inference_mode()``; the result is an ordinary tensor without grad.
    """
    device = torch.device(device)
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if not 0 <= start_step < num_inference_steps:
        raise ValueError(f"start_step must be in [0, {num_inference_steps}), got {start_step}")
    if start_step > 0 and init is None:
        raise ValueError("start_step > 0 needs init: the partially noised start of SDEdit")
    if init is not None and tuple(init.shape) != tuple(shape):
        raise ValueError(f"init has shape {tuple(init.shape)}, expected {tuple(shape)}")
    guided = guidance_scale > 1.0
    # Schedulers other than DDIM (config-compatible ones) may not take eta or a generator.
    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs = {}
    if "eta" in step_params:
        step_kwargs["eta"] = eta
    elif eta:
        raise ValueError(f"{type(scheduler).__name__}.step takes no eta; use a DDIMScheduler for eta={eta}")
    if "generator" in step_params:
        step_kwargs["generator"] = generator
    if use_clipped_model_output:
        step_kwargs["use_clipped_model_output"] = True

    with torch.inference_mode():
        scheduler.set_timesteps(num_inference_steps, device=device)
        if init is None:
            # Drawn on the generator's device (the CPU by default) so that a seed gives the
            # same noise whatever device samples; then moved.
            noise_device = generator.device if generator is not None else device
            x = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
            x = (x * scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        else:
            x = init.to(device=device, dtype=dtype)
        for t in scheduler.timesteps[start_step:]:
            x_in = torch.cat([x, x]) if guided else x
            x_in = scheduler.scale_model_input(x_in, t)
            eps = eps_fn(x_in, t)
            if eps.shape != x_in.shape:
                raise ValueError(f"eps_fn returned shape {tuple(eps.shape)} for input {tuple(x_in.shape)}")
            if guided:
                eps_uncond, eps_cond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            x = scheduler.step(eps.to(x.dtype), t, x, **step_kwargs).prev_sample
    # An inference tensor cannot be modified in place outside inference mode; a clone can.
    return x.clone()


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """The linear beta schedule of DDPM (Ho et al. 2020), in float64."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def ancestral_sample(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    betas: torch.Tensor,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    first_step: int = 1,
) -> torch.Tensor:
    """Ancestral DDPM sampling over every timestep from T-1 down to ``first_step``, clamped
    to [-1, 1] at the end.

    Each step draws ``x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) +
    sqrt(beta~_t) z`` with the posterior variance ``beta~_t = beta_t (1 - abar_{t-1}) /
    (1 - abar_t)``, noise included at the last step. ``first_step=1`` is the loop of
    implementations that never train t = 0 (D-Cube's: 999 steps for T = 1000). The noise
    is drawn on ``generator``'s device (the CPU by default), so a seed gives the same
    images on any device.
    """
    device = torch.device(device)
    alphas = 1.0 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    noise_device = generator.device if generator is not None else device
    with torch.inference_mode():
        x = torch.randn(shape, generator=generator, device=noise_device).to(device)
        for t in range(len(betas) - 1, first_step - 1, -1):
            beta, alpha, alpha_bar = betas[t].item(), alphas[t].item(), alpha_bars[t].item()
            alpha_bar_prev = alpha_bars[t - 1].item() if t > 0 else 1.0
            timesteps = torch.full((shape[0],), t, device=device, dtype=torch.long)
            eps = eps_fn(x, timesteps).float()
            mean = (x - beta / (1.0 - alpha_bar) ** 0.5 * eps) / alpha**0.5
            variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
            z = torch.randn(shape, generator=generator, device=noise_device).to(device)
            x = mean + variance**0.5 * z
    return x.clamp(-1.0, 1.0).clone()
