"""Command-line pieces shared by the entries (``issegm/*.py``, ``iclass/ilsvrc.py``)."""
import argparse
import copy


class HelpFormatter(argparse.HelpFormatter):
    """``--help`` that states each option's default once, where it tells something.

    ``(default: X)`` is appended to every option with a value default, also to options
    without help text; not where the help text states the default itself (e.g. "default:
    from the weights file name"), not for flags (``store_true``/``store_false``: the default
    is "not given"), not for empty defaults (``None``, ``''``, ``[]``: the option is unset).
    """

    @staticmethod
    def _states_default(action):
        text = action.help or ''
        return not ('default' in text.lower() or action.nargs == 0 or not action.option_strings
                    or action.default is argparse.SUPPRESS
                    or action.default in (None, '') or action.default in ([], ()))

    def _format_action(self, action):
        if self._states_default(action):
            action = copy.copy(action)
            action.help = ((action.help or '') + ' (default: %(default)s)').lstrip()
        return super()._format_action(action)


def add_precision_options(group, calib_source='training images'):
    """``--dtype``, ``--calib-images``, ``--calib-mode`` of the evaluation entries (see
    :mod:`rn38.lowprec`); ``calib_source`` names the images int8 calibrates on."""
    group.add_argument('--dtype', choices=('float32', 'bfloat16', 'int8'), default='float32',
                       help='inference precision (CPU, oneDNN): bfloat16 needs avx512_bf16; '
                            'int8 calibrates on --calib-images %s once and caches the '
                            'quantized graph next to --weights' % calib_source)
    group.add_argument('--calib-images', type=int, default=10,
                       help='%s for the int8 calibration' % calib_source)
    group.add_argument('--calib-mode', choices=('entropy', 'naive'), default='entropy',
                       help='int8 ranges: minimal KL divergence (entropy) or min/max (naive)')


def config_from_args(config_class, args, **derived):
    """The task's config dataclass from parsed options: every field of ``config_class``
    that ``args`` (an argparse Namespace) has, then ``derived`` (values computed from
    them); the other fields keep their defaults. An option without a field is a
    programming error (TypeError), so no option is silently dropped from the saved config."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(config_class)}
    values = dict(vars(args), **derived)
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError('%s has no field for %s' % (config_class.__name__, ', '.join(unknown)))
    return config_class(**values)
