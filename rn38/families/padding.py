"""Networks that need inputs of a multiple of their pooling factor, for inputs of any size."""
import mxnet as mx
from mxnet.gluon import Block


class PaddedInput(Block):
    """Zero-pads the input to what ``inner`` accepts and crops its scores back.

    ``inner``: a block ``(N, 3, H, W) -> (N, C, H / out_stride, W / out_stride)`` that needs
    H and W to be multiples of ``multiple`` and at least ``min_size``. ``forward(x)``: any
    ``(N, 3, H, W)`` -> ``(N, C, ceil(H / out_stride), ceil(W / out_stride))``. Zero is the
    mean colour after normalisation, as the evaluation's own padding. Imperative (the pad
    depends on the shape); ``hybridize()`` hybridizes ``inner``.
    """

    def __init__(self, inner, multiple, out_stride=1, min_size=0):
        super().__init__(prefix='')
        with self.name_scope():
            self.inner = inner
        self.multiple, self.out_stride, self.min_size = int(multiple), int(out_stride), \
            int(min_size)

    def padded_size(self, length):
        m = self.multiple
        return max(-(-int(length) // m) * m, -(-self.min_size // m) * m)

    def forward(self, x):
        h, w = x.shape[2:]
        ph, pw = self.padded_size(h) - h, self.padded_size(w) - w
        if ph or pw:
            x = mx.nd.pad(x, mode='constant', constant_value=0,
                          pad_width=(0, 0, 0, 0, 0, ph, 0, pw))
        y = self.inner(x)
        s = self.out_stride
        oh, ow = -(-h // s), -(-w // s)
        if y.shape[2:] != (oh, ow):
            y = mx.nd.slice(y, begin=(None, None, 0, 0), end=(None, None, oh, ow))
        return y
