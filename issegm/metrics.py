"""Confusion-matrix scores for semantic segmentation.

:class:`ConfusionMatrix` counts ``(ground truth, prediction)`` pairs of train ids over every
pixel whose ground truth is not the ignore label; all the scores derive from it:

* pixel accuracy: correct pixels / counted pixels;
* class accuracy of class c: ``M[c, c] / sum_j M[c, j]`` (recall);
* class IoU of class c: ``M[c, c] / (sum_j M[c, j] + sum_i M[i, c] - M[c, c])``.

Classes absent from both the ground truth and the prediction have no IoU (NaN), and a class
absent from the ground truth has no accuracy (NaN); the means are taken over the classes
that have a value. This is the convention of ``cityscapesscripts``. The authors'
``ScoreUpdater`` (ademxapp ``issegm/voc.py``) is different: it replaces a zero ground-truth
pixel count by one, so such a class scores 0 and still enters the mean; pass
``absent='zero'`` to the means to reproduce it. On a split where every class occurs in the
ground truth (e.g. the full Cityscapes val) both give the same numbers.
"""
import io

import numpy as np

from rn38.atomic import atomic_write_bytes

from .datasets import IGNORE_LABEL


class ConfusionMatrix:
    """Pixel counts ``M[gt, pred]`` (int64, shape ``(C, C)``) for ``C = num_classes``.

    ``update(pred, gt)`` takes integer arrays of the same shape (any number of dimensions):
    ``gt`` holds train ids in ``[0, C)`` or ``ignore_label`` (those pixels are skipped),
    ``pred`` train ids in ``[0, C)`` wherever ``gt`` is counted. Anything else is a
    ValueError rather than a silently wrong score.
    """

    def __init__(self, num_classes, ignore_label=IGNORE_LABEL):
        if int(num_classes) < 1:
            raise ValueError('num_classes must be >= 1, got %r' % (num_classes,))
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    # -- counting ------------------------------------------------------------------------
    def compute(self, pred, gt):
        """The ``(C, C)`` int64 counts of one prediction, without adding them."""
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError('prediction shape %s differs from ground truth shape %s'
                             % (pred.shape, gt.shape))
        c = self.num_classes
        gt = gt.ravel()
        pred = pred.ravel()
        keep = gt != self.ignore_label if self.ignore_label is not None else \
            np.ones(gt.shape, bool)
        gt = gt[keep].astype(np.int64, copy=False)
        pred = pred[keep].astype(np.int64, copy=False)
        if gt.size:
            if gt.min() < 0 or gt.max() >= c:
                bad = gt[(gt < 0) | (gt >= c)][0]
                raise ValueError('ground truth value %d is neither a train id in [0, %d) nor '
                                 'the ignore label %r' % (bad, c, self.ignore_label))
            if pred.min() < 0 or pred.max() >= c:
                bad = pred[(pred < 0) | (pred >= c)][0]
                raise ValueError('predicted value %d is not a train id in [0, %d)' % (bad, c))
        return np.bincount(gt * c + pred, minlength=c * c).reshape(c, c)

    def update(self, pred, gt):
        """Add one prediction; returns its own ``(C, C)`` counts (for per-image records)."""
        counts = self.compute(pred, gt)
        self.matrix += counts
        return counts

    def add_counts(self, counts):
        """Add a ``(C, C)`` count matrix computed elsewhere (e.g. read back from disk)."""
        counts = np.asarray(counts)
        if counts.shape != self.matrix.shape:
            raise ValueError('count matrix of shape %s, expected %s'
                             % (counts.shape, self.matrix.shape))
        if counts.dtype.kind not in 'iu' or (counts < 0).any():
            raise ValueError('counts must be non-negative integers')
        self.matrix += counts.astype(np.int64)

    def merge(self, other):
        """Add the counts of another ConfusionMatrix of the same classes; returns self."""
        if other.num_classes != self.num_classes or other.ignore_label != self.ignore_label:
            raise ValueError('cannot merge a %d-class matrix (ignore %r) into a %d-class one '
                             '(ignore %r)' % (other.num_classes, other.ignore_label,
                                              self.num_classes, self.ignore_label))
        self.matrix += other.matrix
        return self

    def reset(self):
        self.matrix[:] = 0

    # -- scores --------------------------------------------------------------------------
    @property
    def total(self):
        """Number of counted (not ignored) pixels."""
        return int(self.matrix.sum())

    def pixel_accuracy(self):
        """Correct / counted pixels, in [0, 1]; NaN when nothing was counted."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float('nan')

    def class_accuracy(self):
        """``(C,)`` float64 recall per class; NaN for classes absent from the ground truth."""
        gt_pixels = self.matrix.sum(1)
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.where(gt_pixels > 0, np.diag(self.matrix) / gt_pixels, np.nan)

    def class_iou(self):
        """``(C,)`` float64 IoU per class; NaN for classes absent from gt and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(1) + self.matrix.sum(0) - tp
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.where(union > 0, tp / union, np.nan)

    @staticmethod
    def _mean(values, absent):
        if absent == 'zero':
            return float(np.nan_to_num(values, nan=0.0).mean())
        if absent != 'nan':
            raise ValueError("absent must be 'nan' or 'zero', got %r" % (absent,))
        valid = values[~np.isnan(values)]
        return float(valid.mean()) if valid.size else float('nan')

    def mean_class_accuracy(self, absent='nan'):
        """Mean of :meth:`class_accuracy` over classes present in the ground truth
        (``absent='zero'``: over all classes, absent ones counting 0, like the authors)."""
        return self._mean(self.class_accuracy(), absent)

    def mean_iou(self, absent='nan'):
        """Mean of :meth:`class_iou` over classes with a value (``absent='zero'``: over all
        classes, NaN counting 0; the authors' ScoreUpdater, see the module docstring)."""
        return self._mean(self.class_iou(), absent)

    def normalized(self):
        """``(C, C)`` float64 rows divided by their sums (rows of absent classes are 0)."""
        rows = self.matrix.sum(1, keepdims=True)
        return self.matrix / np.maximum(rows, 1)

    def to_dict(self, class_names=None):
        """Scores as a JSON-ready dict (NaN written as None); fractions in [0, 1]."""
        names = list(class_names) if class_names is not None else \
            [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError('%d class names for %d classes' % (len(names), self.num_classes))

        def clean(x):
            return None if np.isnan(x) else float(x)

        acc, iou = self.class_accuracy(), self.class_iou()
        return {
            'num_classes': self.num_classes,
            'pixels': self.total,
            'pixel_accuracy': clean(self.pixel_accuracy()),
            'mean_class_accuracy': clean(self.mean_class_accuracy()),
            'mean_iou': clean(self.mean_iou()),
            'mean_iou_absent_as_zero': clean(self.mean_iou(absent='zero')),
            'class_names': names,
            'class_accuracy': {n: clean(v) for n, v in zip(names, acc)},
            'class_iou': {n: clean(v) for n, v in zip(names, iou)},
            'gt_pixels': {n: int(v) for n, v in zip(names, self.matrix.sum(1))},
        }

    def table(self, class_names=None):
        """A plain-text per-class table (IoU, accuracy, ground-truth pixels) for the log."""
        names = list(class_names) if class_names is not None else \
            [str(i) for i in range(self.num_classes)]
        width = max([len('class')] + [len(n) for n in names])
        acc, iou, gt = self.class_accuracy(), self.class_iou(), self.matrix.sum(1)

        def pct(x):
            return '    -' if np.isnan(x) else '%5.2f' % (100 * x)

        lines = ['%-*s  %6s  %6s  %12s' % (width, 'class', 'IoU%', 'acc%', 'gt pixels')]
        for n, a, i, g in zip(names, acc, iou, gt):
            lines.append('%-*s  %6s  %6s  %12d' % (width, n, pct(i), pct(a), g))
        lines.append('%-*s  %6s  %6s  %12d' % (width, 'mean', pct(self.mean_iou()),
                                               pct(self.mean_class_accuracy()), gt.sum()))
        lines.append('pixel accuracy %s%%' % pct(self.pixel_accuracy()).strip())
        return '\n'.join(lines)

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self):
        return {'num_classes': self.num_classes,
                'ignore_label': -1 if self.ignore_label is None else int(self.ignore_label),
                'matrix': self.matrix.copy()}

    def load_state_dict(self, state):
        if int(state['num_classes']) != self.num_classes:
            raise ValueError('saved state has %d classes, this matrix %d'
                             % (int(state['num_classes']), self.num_classes))
        ignore = int(state['ignore_label'])
        self.ignore_label = None if ignore == -1 else ignore
        self.matrix = np.array(state['matrix'], np.int64).reshape(self.num_classes,
                                                                  self.num_classes)

    def save(self, path):
        """Write the state to ``path`` (.npz, no pickle) atomically."""
        buf = io.BytesIO()
        np.savez(buf, **self.state_dict())
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
        ignore = int(state['ignore_label'])
        cm = cls(int(state['num_classes']), None if ignore == -1 else ignore)
        cm.load_state_dict(state)
        return cm
