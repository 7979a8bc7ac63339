"""Max pooling that remembers where the maxima were, and unpooling back to those places.

MXNet has no max pooling with indices. For a 2x2/2 pool the positions are recovered from
the input and the pooled map: the input is regrouped so that the four pixels of each
window are four channel groups (``space_to_depth``) and compared with the window's
maximum. Ties (several pixels equal to the maximum) keep only the FIRST one in scan
order (top-left, top-right, bottom-left, bottom-right), so unpooling puts each value at
exactly one position, as an index-based unpooling does.
"""
from mxnet.gluon import HybridBlock


def _window_positions(F, x):
    """``(N, C, 2h, 2w)`` -> the four ``(N, C, h, w)`` pixels of each 2x2 window, in scan
    order (``space_to_depth`` puts window pixel ``(i, j)`` in channel group ``2i + j``)."""
    grouped = F.reshape(F.space_to_depth(x, block_size=2), shape=(0, -4, 4, -1, -2))
    return F.split(grouped, num_outputs=4, axis=1, squeeze_axis=True)


def argmax_masks(F, x, pooled):
    """Float masks ``[(N, C, h, w)] * 4``: 1 where window pixel k (scan order) is the one
    that the max pool chose (the first maximum), else 0. No gradient flows through them."""
    masks, taken = [], None
    for pixel in _window_positions(F, x):
        hit = F.broadcast_equal(pixel, pooled)
        if taken is not None:
            hit = hit * (1 - taken)
            taken = taken + hit
        else:
            taken = hit
        masks.append(F.BlockGrad(hit))
    return masks


def unpool(F, y, masks):
    """Put ``y (N, C, h, w)`` at the recorded positions: ``(N, C, 2h, 2w)``, zeros elsewhere."""
    placed = [F.expand_dims(y * m, axis=1) for m in masks]
    return F.depth_to_space(F.reshape(F.concat(*placed, dim=1), shape=(0, -3, -2)),
                            block_size=2)


class MaxPoolWithMask(HybridBlock):
    """2x2/2 max pooling: ``(N, C, 2h, 2w)`` -> ``(pooled (N, C, h, w), mask0..mask3)``.

    Height and width must be even (the networks pad their input to a multiple of 32).
    """

    def hybrid_forward(self, F, x):
        pooled = F.Pooling(x, kernel=(2, 2), stride=(2, 2), pool_type='max')
        return [pooled] + argmax_masks(F, x, pooled)


class MaxUnpool(HybridBlock):
    """``(y (N, C, h, w), mask0..mask3)`` -> ``(N, C, 2h, 2w)``; see :func:`unpool`."""

    def hybrid_forward(self, F, y, m0, m1, m2, m3):
        return unpool(F, y, [m0, m1, m2, m3])
