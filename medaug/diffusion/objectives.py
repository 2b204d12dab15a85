"""Training objectives of pixel-space DDPMs, shared by the papers.

:class:`HybridLoss` is the objective of improved DDPM (Nichol & Dhariwal 2021) as
guided-diffusion trains a network with learned variances (``learn_sigma``): the network
returns the noise and, per channel, ``v`` in [-1, 1] that interpolates the log-variance
between the clipped posterior variance and ``beta_t``; the loss is the mean squared noise
error plus the variational bound term in bits per dimension, computed with the predicted
noise detached so that it trains the variance only. The bound term is the KL between the
forward-process posterior and the model's Gaussian for t > 0, and the negative
log-likelihood of the 8-bit data under a discretised Gaussian at t = 0.
"""

from __future__ import annotations

import math

import torch


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood (nats) of images in [-1, 1] quantised to 256 levels: the Gaussian's
    mass over each pixel's bin of width 2/255, the outer bins open-ended."""
    centered = x - means
    inverse_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inverse_std * (centered + 1.0 / 255.0))
    cdf_minus = approx_standard_normal_cdf(inverse_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


class HybridLoss:
    """``loss(output, x_start, x_t, noise, t)``: per-sample MSE(noise) + bound term (bits/dim)
    for a network ``output`` of 2·C channels (noise, variance interpolation)."""

    def __init__(self, betas: torch.Tensor):
        betas = betas.double()
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        self.table = {
            "sqrt_recip_abar": torch.sqrt(1.0 / abar),
            "sqrt_recipm1_abar": torch.sqrt(1.0 / abar - 1.0),
            "posterior_mean_coef1": betas * torch.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * torch.sqrt(alphas) / (1.0 - abar),
            # The posterior variance is 0 at t = 0: its log is clipped to the value at t = 1.
            "posterior_log_variance": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "log_betas": torch.log(betas),
        }

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        values = self.table[name].to(like.device)[t].float()
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    def posterior(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("posterior_mean_coef1", t, x_t) * x_start + self._at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self._at("posterior_log_variance", t, x_t).expand_as(x_t)

    def model_distribution(self, eps: torch.Tensor, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and log-variance of p(x_{t-1} | x_t) from the predicted noise and ``v``."""
        fraction = (v + 1.0) / 2.0
        log_variance = fraction * self._at("log_betas", t, x_t) + (1.0 - fraction) * self._at(
            "posterior_log_variance", t, x_t
        )
        x_start = self._at("sqrt_recip_abar", t, x_t) * x_t - self._at("sqrt_recipm1_abar", t, x_t) * eps
        mean, _ = self.posterior(x_start, x_t, t)
        return mean, log_variance

    def __call__(
        self, output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        channels = x_start.shape[1]
        eps, v = output[:, :channels], output[:, channels:]
        mse = ((noise - eps.float()) ** 2).flatten(1).mean(1)
        true_mean, true_log_variance = self.posterior(x_start, x_t, t)
        model_mean, model_log_variance = self.model_distribution(eps.detach().float(), v.float(), x_t, t)
        kl = normal_kl(true_mean, true_log_variance, model_mean, model_log_variance).flatten(1).mean(1)
        nll = -discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_variance)
        nll = nll.flatten(1).mean(1)
        bound = torch.where(t == 0, nll, kl) / math.log(2.0)
        return mse + bound
