"""The official Cityscapes scoring: ``cityscapesscripts``' pixel-level evaluation of the
label-id PNGs an evaluation wrote (class and category IoU and iIoU)."""
import contextlib
import glob
import io
import math
import os

from .datasets import DataError


def official_cityscapes_eval(result_dir, gt_root, split='val', export_file=None):
    """Score label-id PNGs with ``cityscapesscripts``' pixel-level evaluation.

    result_dir: folder searched (recursively) for one ``<city>_<seq>_<frame>*.png`` per
        ground-truth file, holding raw label ids (the ``labels/`` of
        :func:`issegm.evaluate.evaluate`).
    gt_root: the Cityscapes root holding ``gtFine/<split>/<city>/*_gtFine_labelIds.png``
        and the matching ``*_gtFine_instanceIds.png`` (needed for the iIoU).
    export_file: if given, their full JSON result is written there.

    Their module keeps its settings in a module-level object; a separate settings object
    is built here and passed to their functions, and no environment variable is read or
    set. Their error exits become a :class:`DataError`.
    Returns ``{'class_iou', 'class_iiou', 'category_iou', 'category_iiou'}`` (dicts name
    -> value in [0, 1], None for NaN, evaluated classes only) and ``'mean_iou'``,
    ``'mean_iiou'``, ``'mean_category_iou'``, ``'mean_category_iiou'``.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as csev
    from cityscapesscripts.helpers.labels import labels as cs_labels

    gt_files = sorted(glob.glob(os.path.join(gt_root, 'gtFine', split, '*',
                                             '*_gtFine_labelIds.png')))
    if not gt_files:
        raise DataError('%s: no gtFine/%s/<city>/*_gtFine_labelIds.png files'
                        % (gt_root, split))
    if not os.path.isdir(result_dir):
        raise DataError('%s: result folder not found' % result_dir)
    args = csev.CArgs()
    args.cityscapesPath = gt_root
    args.exportFile = export_file
    args.groundTruthSearch = os.path.join(gt_root, 'gtFine', split, '*',
                                          '*_gtFine_labelIds.png')
    args.evalInstLevelScore = True
    args.evalPixelAccuracy = False
    args.evalLabels = []
    args.printRow = 5
    args.normalized = True
    args.colorized = False
    args.bold = ''
    args.nocol = ''
    args.JSONOutput = export_file is not None
    args.quiet = True
    args.avgClassSize = dict(csev.args.avgClassSize)
    args.predictionPath = result_dir
    args.predictionWalk = None

    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            predictions = [csev.getPrediction(args, gt) for gt in gt_files]
            result = csev.evaluateImgLists(predictions, gt_files, args)
    except SystemExit:
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        raise DataError('%s: cityscapesscripts evaluation failed: %s'
                        % (result_dir, lines[-1] if lines else 'exit')) from None

    def clean(value):
        return None if value is None or math.isnan(value) else float(value)

    evaluated = [lab.name for lab in cs_labels if lab.id >= 0 and not lab.ignoreInEval]
    with_instances = [lab.name for lab in cs_labels
                      if lab.id >= 0 and not lab.ignoreInEval and lab.hasInstances]
    categories = [c for c, v in result['categoryScores'].items() if not math.isnan(v)]
    return {
        'class_iou': {n: clean(result['classScores'][n]) for n in evaluated},
        'class_iiou': {n: clean(result['classInstScores'][n]) for n in with_instances},
        'category_iou': {c: clean(result['categoryScores'][c]) for c in categories},
        'category_iiou': {c: clean(v) for c, v in result['categoryInstScores'].items()
                          if not math.isnan(v)},
        'mean_iou': clean(result['averageScoreClasses']),
        'mean_iiou': clean(result['averageScoreInstClasses']),
        'mean_category_iou': clean(result['averageScoreCategories']),
        'mean_category_iiou': clean(result['averageScoreInstCategories']),
    }


def has_instance_files(gt_root, split):
    """Whether ``gt_root`` holds ``gtFine/<split>/<city>/*_gtFine_instanceIds.png``, which
    the official evaluation needs (for the iIoU)."""
    return bool(glob.glob(os.path.join(gt_root, 'gtFine', split, '*',
                                       '*_gtFine_instanceIds.png')))


def score_evaluation(out_dir, gt_root, split, mean_iou, logger):
    """:func:`official_cityscapes_eval` of the ``labels/`` an evaluation wrote into
    ``out_dir``; their full result goes to ``out_dir/official.json``, one line to the log
    beside our ``mean_iou`` (0..1). Returns the scores dict."""
    official = official_cityscapes_eval(os.path.join(out_dir, 'labels'), gt_root, split,
                                        os.path.join(out_dir, 'official.json'))

    def percent(value):
        return 'n/a' if value is None else '%.2f%%' % (100 * value)

    logger.info('cityscapesscripts: class IoU %s, iIoU %s, category IoU %s, iIoU %s '
                '(ours: mean IoU %.2f%%)', percent(official['mean_iou']),
                percent(official['mean_iiou']), percent(official['mean_category_iou']),
                percent(official['mean_category_iiou']), 100 * mean_iou)
    return official
