"""Makes the repository's scripts/ importable from the tests."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(REPO, 'scripts') not in sys.path:
    sys.path.insert(0, os.path.join(REPO, 'scripts'))

from make_demo_data import make_demo_dataset  # noqa: E402
