"""Image conventions shared by the segmentation and classification tools.

The networks take RGB pixels scaled to [0, 1] and normalised with the ImageNet mean/std,
and the authors resize images with PIL, choosing the filter from the direction of the
resize (their ``get_interp_method``).
"""
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLING = getattr(Image, 'Resampling', Image)
BICUBIC = _RESAMPLING.BICUBIC
BILINEAR = _RESAMPLING.BILINEAR
LANCZOS = _RESAMPLING.LANCZOS


def interp_method(src_hw, dst_hw, choose=True):
    """PIL filter for resizing ``(h, w)`` ``src_hw`` to ``dst_hw``: with ``choose`` (the
    authors' default) LANCZOS ("antialias") when both sides shrink, BICUBIC when both grow,
    BILINEAR otherwise; without, always BICUBIC."""
    if not choose:
        return BICUBIC
    (h0, w0), (h1, w1) = src_hw, dst_hw
    if h1 < h0 and w1 < w0:
        return LANCZOS
    if h1 > h0 and w1 > w0:
        return BICUBIC
    return BILINEAR
