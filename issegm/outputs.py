"""What an evaluation writes per image and over a split: label and colour PNGs, the
authors' "correct" map, overlays, the per-class IoU and confusion plots, and the
stride-level prediction records (written by :func:`prediction_record_bytes`, read back
by :func:`rebuild_prediction`). The writers write atomically; a record is returned as
bytes for the caller to write atomically."""
import io

import cv2
import numpy as np

from rn38.atomic import atomic_write_bytes

from .datasets import DataError
from .predictor import maps_to_image


def _encode_png(array):
    ok, buf = cv2.imencode('.png', array)
    if not ok:
        raise IOError('PNG encoding failed')
    return buf.tobytes()


def write_label_png(path, label_ids):
    """``uint8 (H, W)`` label ids -> a single-channel 8-bit PNG (atomic write)."""
    atomic_write_bytes(path, _encode_png(np.ascontiguousarray(label_ids, np.uint8)))


def write_rgb_png(path, rgb):
    """``uint8 (H, W, 3)`` RGB -> PNG (atomic write)."""
    atomic_write_bytes(path, _encode_png(cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8),
                                                      cv2.COLOR_RGB2BGR)))


def correct_map(pred, gt, ignore_label=255):
    """The authors' "correct" picture: ``uint8 (H, W)``, 255 where the ground truth is
    ignored, 127 where the prediction is right, 0 where it is wrong."""
    out = np.where(pred == gt, 127, 0).astype(np.uint8)
    out[gt == ignore_label] = 255
    return out


def overlay(image, color, alpha=0.5):
    """Blend ``uint8 (H, W, 3)`` image and colour map: ``(1-alpha)*image + alpha*color``."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def plot_class_iou(class_iou, class_names, path, title=''):
    """Horizontal bar chart of per-class IoU (percent) as a PNG; NaN classes shown empty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    values = np.nan_to_num(np.asarray(class_iou, np.float64) * 100, nan=0.0)
    fig = Figure(figsize=(7, 1.0 + 0.22 * len(class_names)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ypos = np.arange(len(class_names))
    ax.barh(ypos, values, color='tab:blue')
    ax.set_yticks(ypos)
    ax.set_yticklabels(class_names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel('IoU (%)')
    valid = np.asarray(class_iou, np.float64)
    valid = valid[~np.isnan(valid)]
    miou = 100 * valid.mean() if valid.size else float('nan')
    ax.axvline(miou, color='tab:red', lw=1)
    ax.set_title('%s mIoU %.2f%%' % (title, miou) if title else 'mIoU %.2f%%' % miou)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion(matrix, class_names, path, title=''):
    """Row-normalised confusion matrix (ground truth rows, predictions columns) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    matrix = np.asarray(matrix, np.float64)
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(class_names)
    side = min(30.0, 2.5 + 0.3 * n)
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0, vmax=1, cmap='viridis')
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    fontsize = 7 if n <= 40 else 4
    ax.set_xticklabels(class_names, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(class_names, fontsize=fontsize)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=100)
    atomic_write_bytes(path, buf.getvalue())


PREDICTION_FORMAT = 'rn38-stride-maps-1'


def prediction_record_bytes(maps, train_ids):
    """An ``.npz`` (no pickled objects) holding a prediction at the network's resolution.

    maps: the dict of :meth:`issegm.predictor.SegPredictor.predict_maps`; train_ids:
    ``uint8 (H0, W0)``, the argmax of its probabilities (what was written as the label PNG).
    Keys: ``fine_<k>`` float16 ``(C, T*H/s, T*W/s)`` probability map of test scale k (on
    the padded network input, stride s/T); ``scales`` (0 = the image's own size),
    ``resized_sizes`` and ``input_sizes`` ``(K, 2)`` (image resized for scale k, and the
    padded network input), ``image_size`` ``(H0, W0)``, ``pred_stride`` s/T,
    ``feat_stride`` s, ``test_steps`` T, ``flip``, ``pad_mode``, ``canvas_offset`` (s/2,
    where the image sits in the shifted-pass canvas) and ``pass_offsets`` (the T window
    offsets per axis in that canvas); ``label_fix_index``/``label_fix_value``: the pixels
    (flat indices) whose argmax from the float16 maps differs from ``train_ids`` and their
    train ids, so that :func:`rebuild_prediction` gives ``train_ids`` exactly.
    """
    fines = [np.asarray(f).astype(np.float16) for f in maps['fine']]
    rebuilt = _average_maps(fines, maps['pred_stride'], maps['resized_sizes'],
                            maps['image_size']).argmax(0)
    fix = np.flatnonzero(rebuilt.ravel() != np.asarray(train_ids).ravel())
    arrays = {'fine_%d' % k: f for k, f in enumerate(fines)}
    arrays.update(
        format=np.array(PREDICTION_FORMAT), image_size=np.array(maps['image_size'], np.int64),
        scales=np.array(maps['scales'], np.int64),
        resized_sizes=np.array(maps['resized_sizes'], np.int64).reshape(-1, 2),
        input_sizes=np.array(maps['input_sizes'], np.int64).reshape(-1, 2),
        pred_stride=np.array(maps['pred_stride'], np.int64),
        feat_stride=np.array(maps['feat_stride'], np.int64),
        test_steps=np.array(maps['test_steps'], np.int64), flip=np.array(bool(maps['flip'])),
        pad_mode=np.array(maps['pad_mode']),
        canvas_offset=np.array(maps['canvas_offset'], np.int64),
        pass_offsets=np.array(maps['pass_offsets'], np.int64),
        label_fix_index=fix.astype(np.int64),
        label_fix_value=np.asarray(train_ids).ravel()[fix].astype(np.uint8))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _average_maps(fines, pred_stride, resized_sizes, image_size):
    total = None
    for fine, size in zip(fines, resized_sizes):
        probs = maps_to_image(np.asarray(fine, np.float32), int(pred_stride), tuple(size),
                              tuple(image_size))
        total = probs if total is None else total + probs
    if len(fines) > 1:
        total /= len(fines)
    return total


def rebuild_prediction(path):
    """Full-resolution result of a ``probs/<name>.npz`` record.

    Returns ``(probs, train_ids)``: ``float32 (C, H0, W0)`` probabilities rebuilt from the
    float16 stride-level maps exactly as the evaluation did from its float32 maps (so equal
    to them up to float16 rounding), and ``uint8 (H0, W0)`` train ids equal to the written
    label PNG (mapped back through the dataset's ``label_to_train``) pixel for pixel.
    Raises DataError if the file is not such a record.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            if 'format' not in f.files or str(f['format']) != PREDICTION_FORMAT:
                raise DataError('%s: not a %s prediction record' % (path, PREDICTION_FORMAT))
            sizes = f['resized_sizes']
            fines = [f['fine_%d' % k] for k in range(len(sizes))]
            image_size = tuple(int(v) for v in f['image_size'])
            pred_stride = int(f['pred_stride'])
            fix_index, fix_value = f['label_fix_index'], f['label_fix_value']
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise DataError('%s: cannot read prediction record (%s)' % (path, err)) from None
    probs = _average_maps(fines, pred_stride, sizes, image_size)
    train_ids = probs.argmax(0).astype(np.uint8)
    np.put(train_ids, fix_index, fix_value)
    return probs, train_ids
