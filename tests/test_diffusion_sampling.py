import pytest
import torch
from diffusers import DDIMScheduler

from medaug.diffusion.sampling import batched, ddim_sample

from .conftest import tiny_unet

SHAPE = (3, 1, 16, 16)


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=100)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_samples_have_the_shape_and_follow_the_seed(unet):
    def eps_fn(x, t):
        return unet(x, t).sample

    first = ddim_sample(eps_fn, SHAPE, scheduler(), 4, generator=seeded(0))
    again = ddim_sample(eps_fn, SHAPE, scheduler(), 4, generator=seeded(0))
    other = ddim_sample(eps_fn, SHAPE, scheduler(), 4, generator=seeded(1))
    assert first.shape == SHAPE and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize(("scale", "factor"), [(1.0, 1), (0.5, 1), (3.0, 2)])
def test_guidance_doubles_the_batch_only_above_one(scale, factor):
    sizes, timesteps = [], []

    def eps_fn(x, t):
        sizes.append(x.shape[0])
        timesteps.append(int(t))
        return torch.zeros_like(x)

    sampler = scheduler()
    ddim_sample(eps_fn, SHAPE, sampler, 5, guidance_scale=scale, generator=seeded(0))
    assert sizes == [factor * SHAPE[0]] * 5
    assert timesteps == sampler.timesteps.tolist()


def test_guidance_combines_unconditional_then_conditional():
    scale = 3.0

    def guided(x, t):
        x, _ = x.chunk(2)  # both halves are the same x
        return torch.cat([0.1 * x, 0.3 * x])

    def combined(x, t):
        return 0.1 * x + scale * (0.3 * x - 0.1 * x)

    a = ddim_sample(guided, SHAPE, scheduler(), 5, guidance_scale=scale, generator=seeded(0))
    b = ddim_sample(combined, SHAPE, scheduler(), 5, generator=seeded(0))
    assert torch.allclose(a, b, atol=1e-6)
    swapped = ddim_sample(
        lambda x, t: guided(x, t).flip(0), SHAPE, scheduler(), 5, guidance_scale=scale, generator=seeded(0)
    )
    assert not torch.allclose(a, swapped)


def test_zero_noise_prediction_is_a_deterministic_map():
    def zeros(x, t):
        return torch.zeros_like(x)

    a = ddim_sample(zeros, SHAPE, scheduler(), 6, generator=seeded(3))
    b = ddim_sample(zeros, SHAPE, scheduler(), 6, generator=seeded(3))
    assert torch.isfinite(a).all() and torch.equal(a, b)
    # With eta > 0 the variance noise comes from the same generator: still reproducible, but different.
    c = ddim_sample(zeros, SHAPE, scheduler(), 6, generator=seeded(3), eta=1.0)
    d = ddim_sample(zeros, SHAPE, scheduler(), 6, generator=seeded(3), eta=1.0)
    assert torch.equal(c, d) and not torch.allclose(a, c)


def test_sampling_runs_without_autograd(unet):
    modes = []

    def eps_fn(x, t):
        modes.append(torch.is_inference_mode_enabled())
        return unet(x, t).sample

    assert any(p.requires_grad for p in unet.parameters())
    out = ddim_sample(eps_fn, SHAPE, scheduler(), 2, guidance_scale=2.0, generator=seeded(0))
    assert modes == [True, True]
    assert not out.requires_grad
    out.clamp_(-1, 1)  # the result is an ordinary tensor, usable outside inference mode


def test_start_step_skips_the_first_timesteps_from_init():
    seen = []

    def eps_fn(x, t):
        seen.append(int(t))
        return torch.zeros_like(x)

    sampler = scheduler()
    init = torch.randn(SHAPE, generator=seeded(0))
    out = ddim_sample(eps_fn, SHAPE, sampler, 5, init=init, start_step=2)
    assert seen == sampler.timesteps[2:].tolist() and len(seen) == 3
    assert out.shape == SHAPE
    # Without skipping, init plays the part of the start noise.
    from_init = ddim_sample(eps_fn, SHAPE, scheduler(), 5, init=init)
    from_seed = ddim_sample(eps_fn, SHAPE, scheduler(), 5, generator=seeded(0))
    assert torch.equal(from_init, from_seed)
    with pytest.raises(ValueError, match="needs init"):
        ddim_sample(eps_fn, SHAPE, scheduler(), 5, start_step=2)
    with pytest.raises(ValueError, match="init has shape"):
        ddim_sample(eps_fn, SHAPE, scheduler(), 5, init=init[:1])
    with pytest.raises(ValueError, match="start_step"):
        ddim_sample(eps_fn, SHAPE, scheduler(), 5, init=init, start_step=5)


def test_batched_covers_every_index_once():
    assert batched(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert batched(8, 4) == [range(0, 4), range(4, 8)]
    assert batched(0, 4) == []
    assert [i for r in batched(7, 3) for i in r] == list(range(7))
    with pytest.raises(ValueError):
        batched(5, 0)
