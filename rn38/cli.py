"""Command-line pieces shared by the entries (``issegm/*.py``, ``iclass/ilsvrc.py``) and
the scripts: the one error style (:func:`run_command`), option groups, configs from options."""
import argparse
import contextlib
import copy
import logging
import sys

# Exit status of a command ended by Ctrl-C: 128 + SIGINT, as shells report it.
INTERRUPTED_STATUS = 130
# What a command reports as bad input (a file, folder, label, option, device the user gave):
# DataError, ParamsError, LowPrecisionError are ValueErrors; OSError: files and folders.
BAD_INPUT = (ValueError, OSError)


def first_line(err, empty=None):
    """The first line of an exception's message; ``empty`` (default: the exception's type
    name) if it has none."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else empty or type(err).__name__


def run_command(work, *args, **kwargs):
    """Run an entry's or script's body ``work(*args, **kwargs)``; returns the exit status.

    ``work`` returns its status (``None``: 0). Bad input (:data:`BAD_INPUT`) ends it with
    one line ``error: <first line of the message>`` on stderr and status 2; Ctrl-C
    (``KeyboardInterrupt``, e.g. :class:`rn38.train.TrainingInterrupted`, whose message
    names the last checkpoint) with one line (the message, else ``interrupted``) and
    status 130. Any other exception is a bug and propagates with its traceback; argparse's
    own usage errors (``SystemExit(2)``) pass through unchanged.

    First, before ``work`` loads MXNet, :func:`rn38.runtime.use_all_cores` (one CPU thread
    per physical core unless the user chose a count).
    """
    from .runtime import use_all_cores
    use_all_cores()
    try:
        status = work(*args, **kwargs)
    except BAD_INPUT as err:
        sys.stderr.write('error: %s\n' % first_line(err))
        return 2
    except KeyboardInterrupt as err:
        sys.stderr.write('%s\n' % first_line(err, 'interrupted'))
        return getattr(err, 'exit_status', INTERRUPTED_STATUS)
    return 0 if status is None else status


@contextlib.contextmanager
def bad_input_logged(logger):
    """Within the block, bad input that ends it is also recorded (whole message, level
    ERROR) in the log files of ``logger`` (its ``logging.FileHandler``s; not its console,
    where :func:`run_command` prints the one line), then propagates."""
    try:
        yield
    except BAD_INPUT as err:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, '%s', (err,),
                                   None)
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)
        raise


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors (an unknown option, a missing or malformed
    value) are one line, ``error: <message> (see --help)``, and exit status 2, like every
    other bad input; argparse prints the whole usage first."""

    def error(self, message):
        self.exit(2, 'error: %s (see %s --help)\n' % (message, self.prog))


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


def add_model_options(parser, example, weights_use=None, required=False, default_model=None):
    """``--weights`` and ``--model`` of the entries that build a network: a weights file in
    the released format, ``<model label>_ep-<epoch>.params``, for ``weights_use`` (help
    text); the model label, e.g. ``example``, by default the one in the weights file name,
    else ``default_model``. ``required``: ``--weights`` must be given."""
    parser.add_argument('--weights', required=required, default=None,
                        help='released-format <model label>_ep-<epoch>.params file%s'
                             % (': ' + weights_use if weights_use else ''))
    parser.add_argument('--model', default=None,
                        help='model label, e.g. %s (default: from the weights file name%s)'
                             % (example, ', else ' + default_model if default_model else ''))


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
