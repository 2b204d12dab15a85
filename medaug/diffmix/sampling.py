"""DiffMix's synthesis: SDEdit-style re-rendering of a real patch under a virtual label map
(spec §2.4, the official ``ddim_sample_loop_progressive``).

The real patch is noised to the step ``strength`` of the way into a ``respaced_steps``-step
schedule (official: 55 % of ``ddim100``, i.e. step 540 of 1000), then denoised by DDIM
(eta 0, the x0 prediction clipped to [-1, 1] and the noise re-derived from it) under the
label map, with classifier-free guidance on the noise channels: ``eps_u + s (eps_c -
eps_u)``, the unconditional pass seeing an all-zero label map. The learned-variance
channels play no part in a deterministic DDIM step.
"""

from __future__ import annotations

import torch

from medaug.diffusion.sampling import ddim_sample


def sdedit_scheduler(settings: dict):
    """A DDIM scheduler over the training schedule whose ``set_timesteps(n)`` keeps every
    ``T / n``-th step from 0 (guided-diffusion's respacing ``ddim<n>``)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=settings["num_train_timesteps"],
        beta_schedule="linear",
        beta_start=settings["beta_start"],
        beta_end=settings["beta_end"],
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
    )


def sdedit_start_step(respaced_steps: int, strength: float) -> int:
    """Index into the descending timesteps where denoising starts: the last
    ``int(respaced_steps * strength)`` steps run (official ``ddim_percent``)."""
    kept = int(respaced_steps * strength)
    if not 1 <= kept <= respaced_steps:
        raise ValueError(f"strength {strength} keeps {kept} of {respaced_steps} steps")
    return respaced_steps - kept


def sdedit(
    network: torch.nn.Module,
    images: torch.Tensor,
    label_maps: torch.Tensor,
    settings: dict,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Re-render ``images`` (N, 3, H, W in [-1, 1]) under ``label_maps`` (N, C, H, W, see
    :func:`medaug.diffmix.sdm.semantic_condition`); returns images in [-1, 1]."""
    scheduler = sdedit_scheduler(settings)
    steps = settings["respaced_steps"]
    start = sdedit_start_step(steps, settings["strength"])
    scheduler.set_timesteps(steps)
    first = scheduler.timesteps[start]
    noise = torch.randn(images.shape, generator=generator, device=generator.device)
    init = scheduler.add_noise(images.float().cpu(), noise.cpu(), first.reshape(1))
    guided = settings["guidance_scale"] > 1.0
    condition = label_maps.to(device)
    if guided:
        condition = torch.cat([torch.zeros_like(condition), condition])

    def eps_fn(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        steps_in = torch.full((len(x_in),), int(t), device=x_in.device, dtype=torch.long)
        return network(x_in, steps_in, condition)[:, :3]

    return ddim_sample(
        eps_fn,
        tuple(images.shape),
        scheduler,
        steps,
        guidance_scale=settings["guidance_scale"],
        generator=generator,
        device=device,
        init=init,
        start_step=start,
        use_clipped_model_output=True,
    )
