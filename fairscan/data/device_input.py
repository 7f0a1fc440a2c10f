"""The last step of the input pipeline, on the device: uint8 grey batches to the model's normalised float input.

Data-loading workers hand over what PIL produced: one uint8 channel per image (``(B, 1, H, W)``; MoCo v3's two
views ``(B, 2, 1, H, W)``), 50 KB at 224 px instead of the 602 KB of a three-channel float32 tensor. The loader
pins those batches when CUDA is available and Accelerate copies them with ``non_blocking``; this module turns
them into what the model takes, on the device:

    x / 255, repeated to three channels, minus ``mean``, over ``std``

with the same float32 operations, in the same order, as torchvision's ``ToTensor`` + ``Normalize`` did on the
host, so the values are the same (the three channels come from broadcasting the one grey channel against the
per-channel mean). Used by ``finetune`` (training and validation), ``predict`` and ``pretrain`` (MAE, MoCo v3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GREY_CHANNELS = 1


class DeviceInput:
    """``DeviceInput(mean, std)(x)``: a uint8 batch ``(..., 1, H, W)`` as the normalised float ``(..., 3, H, W)``.

    The mean and std live on whichever device the batch is on (made once per device). A float batch is refused:
    it would mean a pipeline that still normalises on the host, and normalising twice would be silently wrong.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False):
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.channels_last = channels_last
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:
            shape = (len(self.mean), 1, 1)
            self._on[device] = (
                torch.tensor(self.mean, dtype=torch.float32).view(shape).to(device),
                torch.tensor(self.std, dtype=torch.float32).view(shape).to(device),
            )
        return self._on[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8 or x.dim() < 4 or x.shape[-3] != GREY_CHANNELS:
            raise TypeError(
                f"DeviceInput takes uint8 grey batches (..., 1, H, W); got {x.dtype} {tuple(x.shape)}"
            )
        mean, std = self._stats(x.device)
        out = (x.float().div_(255) - mean).div_(std)
        if self.channels_last and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def bytes_per_image(image_size: int, *, views: int = 1, grey_uint8: bool = True) -> int:
    """What one training image costs to hand from a worker to the device (``grey_uint8=False``: the float32
    three-channel tensor the pipeline handed over before)."""
    per_view = image_size * image_size * (1 if grey_uint8 else 3 * 4)
    return views * per_view
