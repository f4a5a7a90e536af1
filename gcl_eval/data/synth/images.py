"""Product images of the synthetic world, rendered with numpy and encoded as PNG.

An image shows part of what a product is: its colour (fill), its category (a silhouette per
category), its pattern (a texture inside the silhouette) and a visual quality cue (the frame's
colour, from dull grey to gold). Material, style and brand are not drawn: those only the title
can tell. Rendering is a pure function of the product's row, so images are generated lazily and the
same product always gives the same bytes.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from gcl_eval.data.synth.vocab import CATEGORIES, COLOURS

BACKGROUND = np.array([236, 236, 236], dtype=np.float32)
FRAME_LOW = np.array([150, 150, 150], dtype=np.float32)
FRAME_HIGH = np.array([232, 178, 18], dtype=np.float32)
_SUPERSAMPLE = 4


def _shape_polygons(shape: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """Silhouettes in unit coordinates: a list of ("poly", points) or ("ellipse", [p0, p1])."""
    shapes = {
        "tshirt": [("poly", [(.30, .18), (.42, .14), (.58, .14), (.70, .18), (.88, .34), (.78, .44),
                             (.70, .38), (.70, .86), (.30, .86), (.30, .38), (.22, .44), (.12, .34)])],
        "dress": [("poly", [(.40, .12), (.60, .12), (.62, .36), (.82, .88), (.18, .88), (.38, .36)])],
        "trousers": [("poly", [(.30, .12), (.70, .12), (.74, .88), (.56, .88), (.50, .42), (.44, .88),
                               (.26, .88)])],
        "hoodie": [("ellipse", [(.38, .08), (.62, .30)]),
                   ("poly", [(.28, .22), (.72, .22), (.90, .46), (.80, .54), (.72, .44), (.72, .88),
                             (.28, .88), (.28, .44), (.20, .54), (.10, .46)])],
        "shoe": [("poly", [(.12, .48), (.40, .48), (.52, .58), (.88, .64), (.90, .78), (.12, .78)])],
        "boot": [("poly", [(.32, .12), (.56, .12), (.56, .60), (.86, .68), (.88, .86), (.32, .86)])],
        "bag": [("ellipse", [(.34, .14), (.66, .46)]), ("poly", [(.18, .34), (.82, .34), (.88, .86),
                                                                (.12, .86)])],
        "backpack": [("ellipse", [(.40, .08), (.60, .24)]),
                     ("poly", [(.26, .18), (.74, .18), (.80, .88), (.20, .88)])],
        "mug": [("ellipse", [(.58, .34), (.86, .66)]), ("poly", [(.18, .22), (.66, .22), (.66, .84),
                                                                (.18, .84)])],
        "lamp": [("poly", [(.34, .12), (.66, .12), (.80, .44), (.20, .44)]),
                 ("poly", [(.46, .44), (.54, .44), (.54, .78), (.46, .78)]),
                 ("poly", [(.28, .78), (.72, .78), (.72, .88), (.28, .88)])],
        "cushion": [("poly", [(.16, .20), (.50, .14), (.84, .20), (.88, .50), (.84, .80), (.50, .86),
                              (.16, .80), (.12, .50)])],
        "vase": [("poly", [(.42, .10), (.58, .10), (.56, .30), (.44, .30)]),
                 ("ellipse", [(.22, .26), (.78, .90)])],
    }
    return shapes[shape]


@lru_cache(maxsize=64)
def shape_mask(category: str, size: int) -> np.ndarray:
    """Anti-aliased silhouette of a category, float32 in [0, 1], size x size."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    for kind, points in _shape_polygons(CATEGORIES[category][2]):
        scaled = [(x * big, y * big) for x, y in points]
        if kind == "poly":
            draw.polygon(scaled, fill=255)
        else:
            draw.ellipse([scaled[0], scaled[1]], fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


@lru_cache(maxsize=64)
def texture_mask(pattern: str, size: int) -> np.ndarray:
    """Where the pattern's second colour goes, bool size x size (all False for solid)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if pattern == "solid":
        return np.zeros((size, size), dtype=bool)
    if pattern == "striped":
        return (np.floor(y * 10) % 2) == 1
    if pattern == "polka-dot":
        cx, cy = (x * 8) % 1 - 0.5, (y * 8) % 1 - 0.5
        return cx**2 + cy**2 < 0.22**2 * 4
    if pattern == "checked":
        return ((np.floor(x * 6) + np.floor(y * 6)) % 2) == 1
    if pattern == "floral":
        cx, cy = (x * 5) % 1 - 0.5, (y * 5) % 1 - 0.5
        petals = (np.abs(cx) < 0.09) & (np.abs(cy) < 0.38) | (np.abs(cy) < 0.09) & (np.abs(cx) < 0.38)
        return petals
    if pattern == "geometric":
        return (np.floor((x + np.abs(((y * 6) % 1) - 0.5) * 0.3) * 8) % 2) == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def render_product(category: str, colour: str, pattern: str, cue: float, shift_x: int, shift_y: int,
                   size: int) -> np.ndarray:
    """The product's image as a uint8 array (size x size x 3)."""
    alpha = np.roll(shape_mask(category, size), (shift_y, shift_x), axis=(0, 1))[..., None]
    base = np.array(COLOURS[colour][0], dtype=np.float32)
    # the texture colour: darker on light colours, lighter on dark ones
    second = base * 0.45 if base.mean() > 110 else base + (255 - base) * 0.55
    texture = np.roll(texture_mask(pattern, size), (shift_y, shift_x), axis=(0, 1))[..., None]
    fill = np.where(texture, second, base)
    image = BACKGROUND * (1 - alpha) + fill * alpha
    width = max(1, size // 32)
    frame = FRAME_LOW + (FRAME_HIGH - FRAME_LOW) * float(np.clip(cue, 0.0, 1.0))
    image[:width, :] = frame
    image[-width:, :] = frame
    image[:, :width] = frame
    image[:, -width:] = frame
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
