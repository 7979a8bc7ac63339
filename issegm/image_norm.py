"""Input normalisation choices of the segmentation entries (``--image-norm``).

``imagenet`` (the authors'): ``(pixel / 255 - mean) / std`` with the ImageNet mean/std.
``per-image`` (the ResNet38 Watershed recipe, TensorFlow's ``per_image_standardization``):
each image's pixel values (0..255, as TensorFlow 1 casts uint8 images) minus their mean,
divided by ``max(std, 1 / sqrt(number of values))``, the statistics taken over all
values of the image (all channels). In training the image is the network's crop (after
the random resize; the border where the crop leaves the image is black, TensorFlow's
zero padding); in evaluation it is the resized test image before padding.
"""
import numpy as np

from rn38.image import IMAGENET_MEAN, IMAGENET_STD

IMAGE_NORMS = ('imagenet', 'per-image')

# Mean/std that make the shared transform return raw 0..255 values.
RAW_PIXELS = ((0.0, 0.0, 0.0), (1.0 / 255, 1.0 / 255, 1.0 / 255))


def per_image_standardization(values):
    """``float array`` (one image, any layout) -> float32, zero mean and unit variance."""
    values = np.asarray(values, np.float64)
    adjusted_std = max(values.std(), 1.0 / np.sqrt(values.size))
    return ((values - values.mean()) / adjusted_std).astype(np.float32)


def mean_std(image_norm):
    """The ``(mean, std)`` the shared transforms should apply before the per-image step."""
    if image_norm not in IMAGE_NORMS:
        raise ValueError('unknown --image-norm %r; valid: %s'
                         % (image_norm, ', '.join(IMAGE_NORMS)))
    return (IMAGENET_MEAN, IMAGENET_STD) if image_norm == 'imagenet' else RAW_PIXELS


class PerImageTrainTransform:
    """Wraps a training transform built with :data:`RAW_PIXELS`: standardises its crop."""

    def __init__(self, transform):
        self.transform = transform
        self.crop_size, self.feat_stride = transform.crop_size, transform.feat_stride

    def __call__(self, image, label, rng=None):
        data, samples = self.transform(image, label, rng)
        return per_image_standardization(data), samples


def make_predictor_class(image_norm):
    """:class:`issegm.predictor.SegPredictor` or a subclass that standardises per image."""
    from .predictor import SegPredictor
    if image_norm == 'imagenet':
        return SegPredictor

    class PerImagePredictor(SegPredictor):
        def normalize(self, image):
            return per_image_standardization(image)

    return PerImagePredictor
