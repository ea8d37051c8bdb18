"""The split image pipeline (uint8 HWC in the workers, normalisation in the main process) gives exactly
the tensors of timm's own eval transform (Resize, CenterCrop, ToTensor, Normalize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_IMAGE_BACKBONE
from mlhead.encoders import create_encoder


@pytest.mark.parametrize("arch,kw", [(TINY_IMAGE_BACKBONE, {}), ("mobilenetv2_100", {})])
def test_uint8_pipeline_is_bit_identical_to_timm_transform(arch, kw):
    bb = create_encoder(arch, random_init=True, **kw)
    assert bb.uint8_transform is not None and bb.mean_std is not None
    rng = np.random.default_rng(0)
    sizes = [(182, 268), (268, 182), (50, 50), (301, 97)]  # W x H: portrait, landscape, tiny, odd
    imgs = [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for w, h in sizes]
    for img in imgs:  # one at a time: sizes differ before the crop, not after
        u8 = bb.uint8_transform(img)
        assert u8.dtype == torch.uint8 and u8.shape[-1] == 3  # H x W x C
        x = bb.prepare(torch.stack([u8, u8]))
        ref = bb.transform(img).unsqueeze(0).expand(2, -1, -1, -1)
        assert x.dtype == torch.float32 and x.shape == ref.shape
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, ref), (img.size, (x - ref).abs().max())


def test_prepare_passes_float_batches_through():
    bb = create_encoder(TINY_IMAGE_BACKBONE, random_init=True)
    x = torch.randn(2, 3, 8, 8)
    assert bb.prepare(x) is x
