"""The planning search of scripts/bench_train.py against known memory curves."""
import importlib.util
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_bench_train():
    spec = importlib.util.spec_from_file_location(
        'bench_train', os.path.join(REPO, 'scripts', 'bench_train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def true_largest(peak, budget, multiple=8, limit=4000):
    fits = [c for c in range(multiple, limit, multiple)
            if peak(c) is not None and peak(c) <= budget]
    return max(fits) if fits else None


@pytest.mark.parametrize('curve,budget,start,origin', [
    # a line in the pixels, the fit's start too low (as the plain fit was)
    (lambda c: 2000 + 0.0105 * c * c, 8192, 688, 2300),
    # a curve that bends upward, the fit's start too high (as the mirrored fit was)
    (lambda c: 2300 + 0.0021 * c * c + 2e-10 * c ** 4, 8192, 1846, 2300),
    (lambda c: 2300 + 0.0021 * c * c + 2e-10 * c ** 4, 16384, 2853, 2300),
])
def test_search_finds_the_largest_crop_within_the_budget(curve, budget, start, origin):
    bench = load_bench_train()
    measured = []

    def measure(crop):
        measured.append(crop)
        return curve(crop)

    within, over, probes = bench.search_largest_crop(measure, budget, start, origin)
    best = true_largest(curve, budget)
    assert within[0] <= best < over[0] and over[0] - within[0] <= 32
    assert within[1] == curve(within[0]) <= budget < over[1] == curve(over[0])
    assert len(probes) == len(measured) <= 5 and len(set(measured)) == len(measured)


def test_search_stops_at_the_largest_crop_the_entry_accepts():
    bench = load_bench_train()

    def measure(crop):            # the entry refuses crops beyond 1.3 x 2048
        return None if crop > 2662 else 2300 + 0.0021 * crop * crop

    within, over, probes = bench.search_largest_crop(measure, 24 * 1024, 3088, 2300)
    assert over[1] is None and over[0] - within[0] <= 32 and within[0] <= 2662 < over[0]
