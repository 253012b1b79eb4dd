"""The networks: a mean-scale hyperprior with gain units for continuous rate.

Minnen, Ballé, Toderici 2018, "Joint Autoregressive and Hierarchical Priors for Learned Image
Compression" (the mean-scale hyperprior, without the autoregressive context), with the gain units of
Cui et al. 2021, "Asymmetric Gained Deep Image Compression With Continuous Rate Adaptation".

The model knows nothing of files or bytes: `forward` is the training path (noise for the rate,
rounding for the decoder). Coding runs the same networks without torch (`export`, `runtime`); this
model is their reference in the tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from compressai.ops import quantize_ste
from torch import Tensor

# MSE lambdas of the 8 quality levels (loss = lambda * 255^2 * MSE + bpp).
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)

# Buffers whose size is only known once the tables are built (compressai registers them empty).
_TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")

# The Gaussian scale table: 64 scales, log-spaced in [0.11, 256] (Ballé et al. 2018).
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64


def scale_table() -> list[float]:
    """The fixed table of Gaussian scales whose integer CDFs code the latent."""
    step = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (SCALE_LEVELS - 1)
    return [math.exp(math.log(SCALE_MIN) + i * step) for i in range(SCALE_LEVELS)]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored with every checkpoint and weights file."""

    arch: str = "mean-scale-hyperprior-gained"
    N: int = 128  # channels of the transforms and of the hyper-latent z
    M: int = 192  # channels of the latent y
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        fields = json.loads(text)
        fields["lambdas"] = tuple(fields["lambdas"])
        return cls(**fields)


def float32(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)` in float32, also under autocast."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return layer(x.float())


class GainedHyperprior(nn.Module):
    """Mean-scale hyperprior with one gain vector per quality level on the latent y."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        N, M = config.N, config.M

        # x (B,3,H,W) -> y (B,M,H/16,W/16)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        # y_hat (B,M,H/16,W/16) -> x_hat (B,3,H,W)
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        # y -> z (B,N,H/64,W/64)
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        # z_hat -> (scales, means) of y, (B,2M,H/16,W/16)
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

        # Gains live in log space, so that exponential interpolation between levels is linear here.
        # Initialised from high-rate theory (step size ~ lambda^-1/2) so each level starts near its rate.
        lam = torch.tensor(config.lambdas, dtype=torch.float32)
        log_gain = 0.5 * torch.log(lam / lam[len(lam) // 2])
        self.log_gain = nn.Parameter(log_gain[:, None].repeat(1, M))
        self.log_inv_gain = nn.Parameter(-log_gain[:, None].repeat(1, M))

    def with_lambdas(self, lambdas: tuple[float, ...]) -> "GainedHyperprior":
        """This network with other quality levels: each new level's gains are interpolated between the
        trained levels linearly in log lambda (extrapolated beyond the ends), so a level whose lambda is
        unchanged keeps its gains exactly."""
        old = torch.tensor(self.config.lambdas, dtype=torch.float64).log()
        new = torch.tensor(lambdas, dtype=torch.float64).log()
        # Position of each new lambda on the old levels' axis (fractional, possibly outside [0, L-1]).
        lo = (torch.searchsorted(old, new) - 1).clamp(0, len(old) - 2)
        frac = ((new - old[lo]) / (old[lo + 1] - old[lo]))[:, None]
        state = self.state_dict()
        for name in ("log_gain", "log_inv_gain"):
            trained = state[name].double()
            state[name] = ((1 - frac) * trained[lo] + frac * trained[lo + 1]).to(state[name].dtype)
        model = GainedHyperprior(ModelConfig(**{**asdict(self.config), "lambdas": tuple(lambdas)}))
        load_state(model, state)
        return model

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor]:
        """Gain and inverse gain, (B,M,1,1) each, for real qualities in [1, levels]."""
        q = quality.to(self.log_gain.dtype).clamp(1, self.config.levels) - 1
        lo = q.floor().long().clamp(max=self.config.levels - 2)
        frac = (q - lo)[:, None]
        log_g = (1 - frac) * self.log_gain[lo] + frac * self.log_gain[lo + 1]
        log_ig = (1 - frac) * self.log_inv_gain[lo] + frac * self.log_inv_gain[lo + 1]
        return log_g.exp()[:, :, None, None], log_ig.exp()[:, :, None, None]

    def forward(self, x: Tensor, quality: Tensor) -> dict[str, Tensor]:
        """Training path: noisy latents for the rate, rounded latents for the decoder (STE).

        Returns x_hat, g_s's last hidden features and the likelihoods of y and z, all in float32 even
        under autocast."""
        return self.rate_distortion(float32(self.g_a[-1], self.g_a[:-1](x)), quality)

    def rate_distortion(self, y: Tensor, quality: Tensor) -> dict[str, Tensor]:
        """`forward` from a latent before the gain (from g_a, or from g_a with the denoising adapters)."""
        gain, inv_gain = self.gains(quality)
        y = y * gain
        z = self.h_a(y)
        # The entropy models need float32: likelihoods of 1e-9 are meaningless in bf16.
        with torch.autocast(device_type=y.device.type, enabled=False):
            y, z = y.float(), z.float()
            z_likelihoods = self.z_likelihoods(z)
            # Detached: the medians (quantiles) are fitted by the auxiliary loss alone.
            z_offset = self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
            z_hat = quantize_ste(z - z_offset) + z_offset
        # The means and scales, as y and x_hat, come from float32 layers: bf16 keeps 8 significant bits,
        # a rounding error of 0.1 on a latent of 30 and a 47 dB ceiling on the pixels.
        scales, means = float32(self.h_s[-1], self.h_s[:-1](z_hat)).chunk(2, 1)
        with torch.autocast(device_type=y.device.type, enabled=False):
            _, y_likelihoods = self.gaussian_conditional(y, scales, means)
            y_hat = quantize_ste(y - means) + means
        features = self.g_s[:-1](y_hat * inv_gain)
        return {"x_hat": float32(self.g_s[-1], features), "features": features,
                "y_likelihoods": y_likelihoods, "z_likelihoods": z_likelihoods,
                "y": y, "scales": scales, "means": means}  # for a context model trained with it

    def z_likelihoods(self, z: Tensor) -> Tensor:
        """The factorized prior's likelihoods of z: noisy in training, rounded around the medians in eval.

        What `entropy_bottleneck(z)[1]` computes, without its permutation built as a device tensor and
        read back (four host syncs a step on CUDA, and graph breaks for torch.compile)."""
        eb = self.entropy_bottleneck
        values = z.transpose(0, 1)  # (N, B, H, W): the prior's layout, channel first
        shape = values.shape
        values = eb.quantize(values.reshape(shape[0], 1, -1), "noise" if self.training else "dequantize", eb._get_medians())
        likelihood, _, _ = eb._likelihood(values)
        if eb.use_likelihood_bound:
            likelihood = eb.likelihood_lower_bound(likelihood)
        return likelihood.reshape(shape).transpose(0, 1)

    def build_tables(self) -> None:
        """Compute the integer CDF tables of both entropy models (stored with the weights)."""
        self.entropy_bottleneck.update(force=True)
        self.gaussian_conditional.update_scale_table(scale_table(), force=True)

    def aux_loss(self) -> Tensor:
        """Loss that fits the factorized prior's quantiles (used to size its tables)."""
        return self.entropy_bottleneck.loss()


def load_state(model, state: dict) -> None:
    """`model.load_state_dict(state)`, sizing the entropy models' table buffers to the state's first
    (a fresh model has them empty; weights and checkpoints made after `build_tables` have them full)."""
    for name, module in model.named_modules():
        for buf in _TABLE_BUFFERS:
            key = f"{name}.{buf}"
            if key in state:
                getattr(module, buf).resize_(state[key].shape)
    model.load_state_dict(state)
