"""Every PIL image mode reaches the encoder as the 8-bit RGB version of the same picture
(mlhead.encoders.pixels.to_rgb8, used by ImageReader for embed and predict). References are computed here
with numpy, independently of the helper: 16-bit = 8-bit * 257, alpha composited onto white by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mlhead.encoders import create_encoder
from mlhead.encoders.base import ImageReader
from mlhead.encoders.pixels import to_rgb8
from conftest import TINY_IMAGE_BACKBONE


def _picture(h=48, w=64, seed=0) -> np.ndarray:
    """An 8-bit RGB picture with 64 colours (so a palette image holds it exactly): blocks + gradients."""
    rng = np.random.default_rng(seed)
    levels = np.array([0, 85, 170, 255], dtype=np.uint8)
    blocks = rng.integers(0, 4, size=(h // 8, w // 8, 3))
    return np.kron(levels[blocks], np.ones((8, 8, 1), dtype=np.uint8)).astype(np.uint8)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _as_rgb(img) -> np.ndarray:
    out = to_rgb8(img)
    assert out.mode == "RGB" and out.size == img.size
    return np.asarray(out)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_grey_is_scaled_not_clipped(mode):
    grey = _grey(_picture())
    wide = grey.astype(np.uint16) * 257  # the 16-bit version of the same picture
    if mode == "I;16B":
        img = Image.frombytes("I;16B", grey.shape[::-1], wide.astype(">u2").tobytes())
    elif mode == "I":
        img = Image.fromarray(wide.astype(np.int32))
    else:
        img = Image.fromarray(wide)
    assert img.mode == mode
    got = _as_rgb(img)
    np.testing.assert_array_equal(got, np.repeat(grey[..., None], 3, axis=2))
    assert (np.asarray(img.convert("RGB"))[grey > 0] == 255).all()  # what PIL alone does: clip to white


def test_16_bit_png_file_round_trip(tmp_path):
    grey = _grey(_picture())
    path = tmp_path / "g16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
        np.testing.assert_array_equal(_as_rgb(img)[..., 0], grey)


def test_rounding_of_16_bit_values():
    vals = np.array([[0, 128, 129, 257, 385, 386, 65535]], dtype=np.uint16)
    got = _as_rgb(Image.fromarray(vals))[0, :, 0]
    want = [int(np.floor(v / 257 + 0.5)) for v in vals[0].tolist()]  # round half up, by hand
    assert got.tolist() == want == [0, 0, 1, 1, 1, 2, 255]


def test_i_mode_out_of_range_is_clipped():
    img = Image.fromarray(np.array([[-5, 70000]], dtype=np.int32))
    assert _as_rgb(img)[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGB"])
def test_lossless_modes_give_the_same_rgb(mode):
    rgb = _picture()
    src = Image.fromarray(rgb)
    img = src.quantize(colors=256, dither=Image.Dither.NONE) if mode == "P" else src.convert(mode)
    np.testing.assert_array_equal(_as_rgb(img), rgb)


def test_grey_and_bilevel_modes():
    grey = _grey(_picture())
    np.testing.assert_array_equal(_as_rgb(Image.fromarray(grey)), np.repeat(grey[..., None], 3, axis=2))
    bw = Image.fromarray(grey).convert("1", dither=Image.Dither.NONE)
    want = np.where(grey >= 128, 255, 0)  # PIL's "1" without dither: threshold at 128
    np.testing.assert_array_equal(_as_rgb(bw), np.repeat(want[..., None], 3, axis=2))


def _alpha(h, w) -> np.ndarray:
    a = np.full((h, w), 255, dtype=np.uint8)
    a[:, : w // 4] = 0  # fully transparent strip
    a[:, w // 4: w // 2] = 128  # half transparent strip
    return a


def _on_white(fg: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Reference compositing, by hand: out = a*fg + (1-a)*255."""
    a = a[..., None].astype(np.float64) / 255
    return fg.astype(np.float64) * a + 255 * (1 - a)


def test_rgba_and_la_are_composited_onto_white():
    rgb = _picture()
    a = _alpha(*rgb.shape[:2])
    hidden = rgb.copy()
    hidden[a == 0] = 0  # what hides under transparent pixels must not show
    got = _as_rgb(Image.fromarray(np.dstack([hidden, a])))
    np.testing.assert_allclose(got, _on_white(hidden, a), atol=1)
    assert (got[a == 0] == 255).all()
    grey = _grey(rgb)
    got = _as_rgb(Image.fromarray(np.dstack([grey, a])))
    np.testing.assert_allclose(got, np.repeat(_on_white(grey[..., None], a), 3, axis=2), atol=1)


def test_opaque_alpha_equals_plain_rgb():
    rgb = _picture()
    opaque = np.full(rgb.shape[:2], 255, np.uint8)
    np.testing.assert_array_equal(_as_rgb(Image.fromarray(np.dstack([rgb, opaque]))), rgb)


def test_palette_with_transparency(tmp_path):
    rgb = _picture()
    pal = Image.fromarray(rgb).quantize(colors=256, dither=Image.Dither.NONE)
    idx = np.asarray(pal)
    key = int(idx[0, 0])
    pal.info["transparency"] = key
    path = tmp_path / "p.png"
    pal.save(path, transparency=key)
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info
        got = _as_rgb(img)
    want = rgb.copy()
    want[idx == key] = 255
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def reader():
    enc = create_encoder(TINY_IMAGE_BACKBONE, random_init=True)
    return enc, ImageReader(enc.uint8_transform)


def _embed(enc, pixels: torch.Tensor) -> torch.Tensor:
    return enc.encode(pixels[None])[0]


def test_encoder_sees_16_bit_png_as_its_8_bit_version(tmp_path, reader):
    """The issue's bug: a 16-bit poster embedded with cosine 1.0000 to a blank white image."""
    enc, read = reader
    grey = _grey(_picture(224, 224))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "p16.png")
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(tmp_path / "p8.png")
    Image.new("RGB", (224, 224), (255, 255, 255)).save(tmp_path / "white.png")
    px16, px8, white = (read(tmp_path / n) for n in ("p16.png", "p8.png", "white.png"))
    assert torch.equal(px16, px8)
    assert px16.float().mean() < 200  # not near-white
    e16, e8, ew = (_embed(enc, p) for p in (px16, px8, white))
    torch.testing.assert_close(e16, e8)
    assert not torch.allclose(e16, ew, atol=1e-3)


@pytest.mark.parametrize("mode", ["P", "CMYK", "L", "RGBA"])
def test_reader_gives_the_rgb_pixels_for_each_mode(tmp_path, reader, mode):
    _, read = reader
    rgb = _picture(224, 224)
    if mode == "L":
        rgb = np.repeat(_grey(rgb)[..., None], 3, axis=2)
    src = Image.fromarray(rgb)
    img = {"P": lambda: src.quantize(colors=256, dither=Image.Dither.NONE),
           "RGBA": lambda: src.convert("RGBA")}.get(mode, lambda: src.convert(mode))()
    ext = "jpg" if mode == "CMYK" else "png"
    if ext == "png":
        img.save(tmp_path / f"x.{ext}")
        assert torch.equal(read(tmp_path / f"x.{ext}"), read(src))
    assert torch.equal(read(img), read(src))  # an open PIL image (mlhead.load(run).predict([img]))
