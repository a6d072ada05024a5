"""Image decoding: every format and mode we promise, and every way bytes can be bad."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from adapter.datasets import dataset_images
from adapter.embed.images import decode_base64, decode_base64_image, decode_image
from adapter.errors import ImageError


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(color=(200, 30, 40), size=(48, 32), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def close(a, b, tol=6):
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("fmt,kw", [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}),
                                    ("GIF", {}), ("BMP", {}), ("TIFF", {})])
def test_formats_decode_to_rgb(fmt, kw):
    img = decode_image(encode(solid(), fmt, **kw))
    assert img.mode == "RGB" and img.size == (48, 32)
    assert close(img.getpixel((10, 10)), (200, 30, 40), tol=12 if fmt == "GIF" else 6)


def test_gif_first_frame_of_animation():
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close(decode_image(data).getpixel((5, 5)), (255, 0, 0))


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.size == (20, 40)
    assert close(out.getpixel((10, 35)), (0, 0, 255), tol=30)  # right half ends up at the bottom
    assert close(out.getpixel((10, 5)), (255, 0, 0), tol=30)


@pytest.mark.parametrize("mode,fmt", [("RGBA", "PNG"), ("LA", "PNG"), ("RGBA", "WEBP")])
def test_transparent_pixels_become_white(mode, fmt):
    img = Image.new(mode, (16, 16), (0,) * len(mode))  # fully transparent black
    out = decode_image(encode(img, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert out.mode == "RGB" and close(out.getpixel((3, 3)), (255, 255, 255))


def test_palette_with_transparency_and_half_alpha():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    out = decode_image(encode(pal, "PNG", transparency=0))
    assert out.getpixel((1, 1)) == (255, 255, 255)
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    assert close(decode_image(encode(half, "PNG")).getpixel((1, 1)), (127, 127, 127), tol=2)


def test_cmyk_jpeg():
    out = decode_image(encode(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG", quality=95))
    assert out.mode == "RGB" and close(out.getpixel((5, 5)), (255, 0, 0), tol=10)


def test_16_bit_greyscale_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    out = decode_image(data)
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    tiff = decode_image(encode(Image.fromarray(arr), "TIFF"))
    assert [tiff.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_one_bit_and_greyscale():
    assert decode_image(encode(Image.new("1", (8, 8), 1), "PNG")).getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(encode(Image.new("L", (8, 8), 77), "BMP")).getpixel((0, 0)) == (77, 77, 77)


def test_jpeg_draft_mode_downscales_but_keeps_target_size():
    big = Image.effect_mandelbrot((1600, 1200), (-2, -1.2, 1, 1.2), 40).convert("RGB")
    data = encode(big, "JPEG", quality=90)
    out = decode_image(data, draft_size=224)
    assert min(out.size) >= 224 and out.size[0] < 1600
    assert decode_image(data).size == (1600, 1200)
    png = decode_image(encode(big.resize((400, 300)), "PNG"), draft_size=64)  # not JPEG: untouched
    assert png.size == (400, 300)


@pytest.mark.parametrize("data,msg", [
    (b"", "empty"),
    (b"hello, this is not an image at all", "not a recognised image"),
    (b'{"image": "nope"}', "text"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image"),
])
def test_non_images_raise_image_error(data, msg):
    with pytest.raises(ImageError, match=msg):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
def test_truncated_images_raise_image_error(fmt):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(ImageError):
        decode_image(data[: len(data) // 2])


def test_not_bytes():
    with pytest.raises(ImageError, match="bytes"):
        decode_image("a string")  # type: ignore[arg-type]


def test_byte_limit():
    data = encode(solid(), "PNG")
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(data, max_bytes=len(data) - 1)
    assert decode_image(data, max_bytes=len(data)).size == (48, 32)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_rejected_before_decoding():
    with pytest.raises(ImageError, match="pixels"):
        decode_image(_png_header_only(100_000, 100_000))  # 10 G pixels declared in 80 bytes
    with pytest.raises(ImageError, match="over the limit of 1000"):
        decode_image(encode(solid(size=(50, 50)), "PNG"), max_pixels=1000)


def test_bomb_beyond_pillow_limit_is_image_error_too():
    with pytest.raises(ImageError):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=10**12)


# -- Base64 ---------------------------------------------------------------------------
def test_base64_variants():
    data = encode(Image.new("RGB", (7, 5), (250, 250, 250)), "PNG")
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    assert "-" in url or "_" in url or url == std
    for text in (std, url, std.rstrip("="), url.rstrip("="), "data:image/png;base64," + std,
                 "\n".join(std[i:i + 76] for i in range(0, len(std), 76)), std.encode()):
        assert decode_base64(text) == data
        assert decode_base64_image(text).size == (7, 5)


@pytest.mark.parametrize("text", ["", "###not base64###", "data:image/png;base64,", "abc$def"])
def test_bad_base64(text):
    with pytest.raises(ImageError, match="Base64"):
        decode_base64_image(text)


def test_base64_of_non_image():
    with pytest.raises(ImageError, match="not a recognised image"):
        decode_base64_image(base64.b64encode(b"just some text bytes").decode())


# -- real photos ----------------------------------------------------------------------
def _real(name: str, n: int):
    files = dataset_images(name, n)
    if not files:
        pytest.skip("shared datasets not found (set HA3_ADAPTER_DATASETS or place ../shared/datasets)")
    return files


@pytest.mark.parametrize("name", ["flickr8k-1k", "fashion-10k", "imagenet-sample"])
def test_real_photos_decode(name):
    for path in _real(name, 8):
        img = decode_image(path.read_bytes(), draft_size=224)
        assert img.mode == "RGB" and min(img.size) > 0


def test_real_photo_truncated_and_corrupted():
    data = _real("flickr8k-1k", 1)[0].read_bytes()
    with pytest.raises(ImageError):
        decode_image(data[:2000])
    corrupted = data[:600] + bytes(b ^ 0x5A for b in data[600:1400]) + data[1400:]
    try:  # JPEG may survive mangled scan data (decoded as noise); it must never crash
        assert decode_image(corrupted).mode == "RGB"
    except ImageError:
        pass
