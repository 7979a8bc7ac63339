"""Write constraints.txt: the exact installed versions of everything setup.py pulls in.

    make constraints    # (re)installs .venv from setup.py if needed, then runs this

Lists, as ``name==version``, every distribution that ``rn38-gluon`` requires, with the given
extras, followed through their own requirements (what ``pip freeze --exclude-editable``
shows, without anything installed by hand). ``pip install -c constraints.txt -e '.[test]'``
then installs the versions the tests passed with.
"""
import argparse
import importlib.metadata as metadata
import os
import sys

# pip's copy of `packaging`: pip is in every venv, `packaging` itself need not be.
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

PROJECT = 'rn38-gluon'


def pinned_closure(project=PROJECT, extras=()):
    """``{canonical name: (name, version)}`` of the installed requirements of ``project``
    with ``extras``, recursively; ``project`` itself is not included."""
    found = {}
    todo = [(project, tuple(extras))]
    done = set()
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if (key, wanted) in done:
            continue
        done.add((key, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ValueError('%s is required (by %s%s) but not installed here; run '
                             '`make venv` first' % (name, project, '[%s]' % ','.join(extras)
                                                    if extras else '')) from None
        if key != canonicalize_name(project):
            found[key] = (dist.metadata['Name'], dist.version)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                    req.marker.evaluate({'extra': e}) for e in ('',) + wanted):
                continue
            todo.append((req.name, tuple(sorted(req.extras))))
    return found


def main(argv=None):
    """Run the command line; returns the exit status (2 after one ``error:`` line)."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--extras', default='test',
                        help="comma-separated extras of %s to include (default: test)" % PROJECT)
    parser.add_argument('--output', default='constraints.txt')
    args = parser.parse_args(argv)
    extras = tuple(sorted(e.strip() for e in args.extras.split(',') if e.strip()))
    pins = pinned_closure(PROJECT, extras)
    python = '%d.%d' % sys.version_info[:2]
    lines = ['# Written by `make constraints` (scripts/freeze_constraints.py): the versions the',
             '# tests passed with, for %s[%s] on Python %s. Used by `make venv`;' % (
                 PROJECT, ','.join(extras), python),
             '# other Python versions resolve freely (pip ignores lines whose marker fails).']
    lines += ['%s==%s; python_version == "%s"' % (pins[k] + (python,)) for k in sorted(pins)]
    tmp = args.output + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, args.output)
    print('wrote %d pins to %s' % (len(pins), args.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
