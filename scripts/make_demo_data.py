#!/usr/bin/env python3
"""Writes a small synthetic street-scene dataset in the exact Cityscapes folder layout.

    python scripts/make_demo_data.py --out data/demo [--seed 0] [--train 24] [--val 8]
                                     [--height 128] [--width 256]

Files, as Cityscapes names them (``<city>_<sequence>_<frame>``, 6 digits each)::

    leftImg8bit/<split>/<city>/<city>_000000_0000NN_leftImg8bit.png        RGB image
    gtFine/<split>/<city>/<city>_000000_0000NN_gtFine_labelIds.png         uint8 label ids
    gtFine/<split>/<city>/<city>_000000_0000NN_gtFine_instanceIds.png      uint16
    gtFine/<split>/<city>/<city>_000000_0000NN_gtFine_color.png            RGBA label colours

Instance ids follow Cityscapes: ``id * 1000 + k`` (k = 0, 1, ... per class per image) for
the car and person objects, the label id elsewhere. Polygon json files are not written.

Each scene has sky, buildings with windows, vegetation, road with lane marks, sidewalk
with tiles, terrain, poles with traffic signs and lights, cars and people (sizes follow a
simple perspective) and the ego-vehicle bonnet (id 1, ignored in training). Each class has
its own colour range and texture plus image-wide noise, so a small network can learn it.
Output is a function of the arguments only (seeded numpy; PNG encoding is deterministic).
"""
import os
import sys
import time

import cv2
import numpy as np

# Cityscapes label ids used here
UNLABELED, EGO, ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = 0, 1, 7, 8, 11, 12, 13, 17
LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 19, 20, 21, 22, 23, 24, 26
INSTANCE_CLASSES = (PERSON, CAR)

CITIES = {'train': ('aachen', 'bochum', 'bremen'), 'val': ('frankfurt', 'lindau', 'munster')}

# label id -> (mean RGB, RGB jitter per object, smooth texture amplitude, pixel noise sigma)
APPEARANCE = {
    UNLABELED: ((0, 0, 0), 0, 0, 2),
    EGO: ((35, 35, 40), 5, 3, 3),
    ROAD: ((95, 88, 100), 6, 7, 9),
    SIDEWALK: ((175, 150, 160), 10, 6, 7),
    BUILDING: ((125, 105, 90), 35, 10, 6),
    WALL: ((150, 150, 175), 12, 8, 5),
    FENCE: ((185, 160, 140), 10, 5, 8),
    POLE: ((120, 120, 125), 8, 2, 3),
    LIGHT: ((40, 40, 35), 5, 2, 3),
    SIGN: ((215, 205, 40), 15, 3, 4),
    VEGETATION: ((65, 120, 40), 12, 28, 22),
    TERRAIN: ((150, 175, 95), 10, 16, 14),
    SKY: ((140, 180, 225), 10, 5, 2),
    PERSON: ((160, 50, 70), 60, 4, 6),
    CAR: ((40, 60, 150), 70, 3, 4),
}


def cityscapes_colors():
    """``np.uint8[256, 3]`` Cityscapes colour of each label id (black for unused ids)."""
    from cityscapesscripts.helpers.labels import labels
    colors = np.zeros((256, 3), np.uint8)
    for lab in labels:
        if lab.id >= 0:
            colors[lab.id] = lab.color
    return colors


class _Scene:
    """Painter's-algorithm layers: label ids, instance ids and colours drawn together."""

    def __init__(self, height, width, rng):
        self.h, self.w, self.rng = height, width, rng
        self.label = np.zeros((height, width), np.uint8)
        self.instance = np.zeros((height, width), np.uint16)
        self.color = np.zeros((height, width, 3), np.uint8)
        self.counts = {}

    def object_color(self, label_id):
        mean, jitter = APPEARANCE[label_id][:2]
        rgb = np.asarray(mean, float) + self.rng.uniform(-jitter, jitter, 3)
        return tuple(int(v) for v in np.clip(rgb, 0, 255))

    def new_instance(self, label_id):
        k = self.counts.get(label_id, 0)
        self.counts[label_id] = k + 1
        return label_id * 1000 + k

    def _draw(self, draw, label_id, color, instance):
        """``draw(layer, value)`` paints one primitive; label_id None = colour only."""
        draw(self.color, color)
        if label_id is not None:
            draw(self.label, int(label_id))
            draw(self.instance, int(instance if instance is not None else label_id))

    def poly(self, points, label_id, color, instance=None):
        pts = [np.round(np.asarray(points, float)).astype(np.int32)]
        self._draw(lambda layer, v: cv2.fillPoly(layer, pts, v), label_id, color, instance)

    def rect(self, x0, y0, x1, y1, label_id, color, instance=None):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label_id, color, instance)

    def ellipse(self, cx, cy, rx, ry, label_id, color, instance=None):
        center, axes = (int(round(cx)), int(round(cy))), (max(1, int(round(rx))),
                                                          max(1, int(round(ry))))
        self._draw(lambda layer, v: cv2.ellipse(layer, center, axes, 0, 0, 360, v, -1),
                   label_id, color, instance)


def _smooth_noise(rng, height, width, cell):
    """``float32 (H, W)`` unit-variance-ish noise smooth over ``cell`` pixels."""
    small = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def render_scene(height, width, rng):
    """One street scene: ``(image uint8 (H, W, 3) RGB, label ids uint8 (H, W),
    instance ids uint16 (H, W))``."""
    s = _Scene(height, width, rng)
    h, w = height, width
    u = rng.uniform
    horizon = u(0.36, 0.5) * h
    vp_x = u(0.35, 0.65) * w

    # sky with a vertical gradient (painted as bands of the same label)
    sky = s.object_color(SKY)
    s.rect(0, 0, w, horizon + 2, SKY, sky)
    for k in range(8):
        shade = tuple(int(np.clip(c - 4 * k, 0, 255)) for c in sky)
        s.rect(0, horizon * k / 8, w, horizon * (k + 1) / 8, None, shade)

    # buildings along the horizon, with window grids
    x = -u(0, 0.1) * w
    while x < w:
        bw = u(0.08, 0.25) * w
        if u() < 0.85:
            top = horizon - u(0.15, 1.0) * horizon
            s.rect(x, top, x + bw, horizon + 0.02 * h, BUILDING, s.object_color(BUILDING))
            win = s.object_color(BUILDING)
            win = tuple(int(c * 0.45) for c in win)
            step_x, step_y = max(3.0, 0.025 * w), max(3.0, 0.05 * h)
            wx, wy = step_x * 0.45, step_y * 0.45
            for yy in np.arange(top + step_y * 0.5, horizon - step_y * 0.5, step_y):
                for xx in np.arange(x + step_x * 0.4, x + bw - step_x * 0.5, step_x):
                    s.rect(xx, yy, xx + wx, yy + wy, None, win)
        x += bw
    if u() < 0.5:  # a low wall or fence in front of the buildings
        cls = WALL if u() < 0.5 else FENCE
        x0 = u(0, 0.6) * w
        s.rect(x0, horizon - 0.06 * h, x0 + u(0.15, 0.4) * w, horizon + 0.02 * h, cls,
               s.object_color(cls))

    # trees: a trunk (vegetation too, as in Cityscapes) and a crown of blobs
    for _ in range(rng.integers(1, 4)):
        cx = u(0, 1) * w
        base_y = horizon + 0.02 * h
        crown_r = u(0.05, 0.12) * h
        s.rect(cx - 0.01 * w, base_y - 0.25 * h, cx + 0.01 * w, base_y, VEGETATION,
               s.object_color(VEGETATION))
        green = s.object_color(VEGETATION)
        for _ in range(4):
            s.ellipse(cx + u(-1, 1) * crown_r, base_y - 0.25 * h + u(-0.6, 0.4) * crown_r,
                      crown_r * u(0.6, 1.1), crown_r * u(0.5, 0.9), VEGETATION, green)

    # ground: terrain, sidewalk, road with lane marks
    s.rect(0, horizon, w, h, TERRAIN, s.object_color(TERRAIN))
    road_l, road_r = vp_x - u(0.3, 0.5) * w, vp_x + u(0.3, 0.5) * w
    walk_l, walk_r = road_l - u(0.15, 0.35) * w, road_r + u(0.15, 0.35) * w
    s.poly([(vp_x - 0.01 * w, horizon), (vp_x + 0.01 * w, horizon), (walk_r, h), (walk_l, h)],
           SIDEWALK, s.object_color(SIDEWALK))
    joints = np.zeros(h, bool)  # tile joints get denser towards the horizon
    for k in range(1, 12):
        y = int(horizon + (h - horizon) * (k / 12.0) ** 2)
        joints[y:y + max(1, int(0.004 * h))] = True
    on_walk = joints[:, None] & (s.label == SIDEWALK)
    s.color[on_walk] = (s.color[on_walk] * 0.8).astype(np.uint8)
    s.poly([(vp_x - 0.005 * w, horizon), (vp_x + 0.005 * w, horizon), (road_r, h), (road_l, h)],
           ROAD, s.object_color(ROAD))
    for k in range(6):  # dashed centre line, still road
        t0, t1 = (k + 0.2) / 6.0, (k + 0.55) / 6.0
        y0, y1 = horizon + (h - horizon) * t0 ** 2, horizon + (h - horizon) * t1 ** 2
        half0, half1 = 0.004 * w * t0 ** 2 + 0.5, 0.004 * w * t1 ** 2 + 0.5
        s.poly([(vp_x - half0, y0), (vp_x + half0, y0), (vp_x + half1, y1), (vp_x - half1, y1)],
               None, (225, 225, 220))

    def ground_x(side, t):
        """x of a point at depth t (0 horizon .. 1 bottom) on a side: -1 left walk .. 1."""
        lo = {-1: walk_l, 1: road_r}[side] if side else road_l
        hi = {-1: road_l, 1: walk_r}[side] if side else road_r
        return vp_x + (lo + u(0.15, 0.85) * (hi - lo) - vp_x) * t

    # objects sorted far to near: poles (with signs/lights), cars, people
    objects = []
    for _ in range(rng.integers(1, 4)):
        objects.append(('pole', u(0.15, 1.0), rng.choice([-1, 1])))
    for _ in range(rng.integers(1, 5)):
        objects.append(('car', u(0.1, 0.9), 0))
    for _ in range(rng.integers(1, 5)):
        objects.append(('person', u(0.15, 1.0), rng.choice([-1, 1])))
    objects.sort(key=lambda o: o[1])
    for kind, t, side in objects:
        y = horizon + (h - horizon) * t
        scale = t * (h - horizon) / h  # object heights relative to the image
        x = ground_x(side, t)
        if kind == 'pole':
            ph, pw = 1.1 * scale * h + 0.1 * h, max(1.5, 0.008 * w * t + 1)
            s.rect(x - pw / 2, y - ph, x + pw / 2, y, POLE, s.object_color(POLE))
            if u() < 0.6:
                r = max(2.0, 0.04 * h * (t + 0.3))
                if u() < 0.5:
                    s.ellipse(x, y - ph + r, r, r, SIGN, s.object_color(SIGN))
                else:
                    s.rect(x - r, y - ph, x + r, y - ph + 1.4 * r, SIGN, (40, 80, 190))
            else:
                bw_, bh_ = max(2.0, 0.025 * h * (t + 0.3)), max(4.0, 0.07 * h * (t + 0.3))
                s.rect(x - bw_, y - ph, x + bw_, y - ph + bh_, LIGHT, s.object_color(LIGHT))
                lamp = [(230, 40, 30), (240, 180, 20), (40, 210, 80)][rng.integers(3)]
                s.ellipse(x, y - ph + bh_ * u(0.2, 0.8), bw_ * 0.6, bw_ * 0.6, None, lamp)
        elif kind == 'car':
            ch, cw = 0.55 * scale * h + 2, 1.0 * scale * h * u(1.4, 2.0) + 3
            inst = s.new_instance(CAR)
            body = s.object_color(CAR)
            s.rect(x - cw / 2, y - ch * 0.6, x + cw / 2, y, CAR, body, inst)
            s.poly([(x - cw * 0.35, y - ch * 0.6), (x - cw * 0.22, y - ch),
                    (x + cw * 0.22, y - ch), (x + cw * 0.35, y - ch * 0.6)], CAR, body, inst)
            s.poly([(x - cw * 0.3, y - ch * 0.62), (x - cw * 0.2, y - ch * 0.92),
                    (x + cw * 0.2, y - ch * 0.92), (x + cw * 0.3, y - ch * 0.62)],
                   None, (70, 90, 110))  # windows
            for wx in (-0.3, 0.3):
                s.ellipse(x + wx * cw, y - ch * 0.05, cw * 0.09, ch * 0.12, CAR, (20, 20, 20),
                          inst)
        else:
            ph = 0.9 * scale * h + 4
            inst = s.new_instance(PERSON)
            clothes = s.object_color(PERSON)
            s.rect(x - ph * 0.08, y - ph * 0.45, x + ph * 0.08, y, PERSON,
                   tuple(int(c * 0.5) for c in clothes), inst)  # legs
            s.ellipse(x, y - ph * 0.62, ph * 0.12, ph * 0.2, PERSON, clothes, inst)
            s.ellipse(x, y - ph * 0.9, ph * 0.07, ph * 0.09, PERSON, (225, 185, 160), inst)

    # the ego vehicle's bonnet along the bottom edge
    bonnet_top = h * u(0.9, 0.95)
    s.poly([(0, h), (0, bonnet_top + 0.04 * h), (w * 0.3, bonnet_top), (w * 0.7, bonnet_top),
            (w, bonnet_top + 0.04 * h), (w, h)], EGO, s.object_color(EGO))

    # per-class texture + image-wide noise and exposure
    smooth_amp = np.zeros(256, np.float32)
    pixel_sigma = np.zeros(256, np.float32)
    for label_id, (_, _, amp, sigma) in APPEARANCE.items():
        smooth_amp[label_id], pixel_sigma[label_id] = amp, sigma
    texture = _smooth_noise(rng, h, w, max(2, h // 24)) * smooth_amp[s.label]
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * pixel_sigma[s.label][:, :, None]
    image = s.color.astype(np.float32) * np.float32(u(0.85, 1.15))
    image += texture[:, :, None] + noise + rng.normal(0, 3, 3).astype(np.float32)
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    instance = np.where(np.isin(s.label, INSTANCE_CLASSES), s.instance,
                        s.label.astype(np.uint16))
    return image, s.label, instance


def _write_png(path, array):
    if not cv2.imwrite(path, array, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError('%s: cannot write PNG' % path)


def make_demo_dataset(out, seed=0, train=24, val=8, height=128, width=256, color=True):
    """Writes the dataset under ``out``; returns ``{split: [image paths]}``.

    Image i of a split goes to city ``i % 3`` as frame ``i // 3`` (cities per split as
    in ``CITIES``). ``height``, ``width``: image size in pixels (at least 32x32).
    """
    if height < 32 or width < 32:
        raise ValueError('demo images must be at least 32x32 pixels, got %dx%d'
                         % (height, width))
    colors = cityscapes_colors()
    written = {}
    for split_no, (split, count) in enumerate((('train', train), ('val', val))):
        written[split] = []
        for i in range(count):
            city = CITIES[split][i % len(CITIES[split])]
            stem = '%s_%06d_%06d' % (city, 0, i // len(CITIES[split]))
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_no, i]))
            image, label, instance = render_scene(height, width, rng)
            image_dir = os.path.join(out, 'leftImg8bit', split, city)
            gt_dir = os.path.join(out, 'gtFine', split, city)
            os.makedirs(image_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            image_path = os.path.join(image_dir, stem + '_leftImg8bit.png')
            _write_png(image_path, image[:, :, ::-1])
            _write_png(os.path.join(gt_dir, stem + '_gtFine_labelIds.png'), label)
            _write_png(os.path.join(gt_dir, stem + '_gtFine_instanceIds.png'), instance)
            if color:
                rgba = np.concatenate([colors[label][:, :, ::-1],
                                       np.full(label.shape + (1,), 255, np.uint8)], axis=2)
                _write_png(os.path.join(gt_dir, stem + '_gtFine_color.png'), rgba)
            written[split].append(image_path)
    return written


def main(argv=None):
    """Run the command line; returns the exit status (2 after one ``error:`` line)."""
    from rn38.cli import run_command
    return run_command(_command, argv)


def _command(argv):
    from rn38.cli import ArgumentParser  # one-line usage errors, status 2
    parser = ArgumentParser(
        description='Write a small synthetic dataset in the Cityscapes layout.')
    parser.add_argument('--out', required=True, help='output folder (the data root)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--train', type=int, default=24, help='train images')
    parser.add_argument('--val', type=int, default=8, help='val images')
    parser.add_argument('--height', type=int, default=128, help='image height, pixels')
    parser.add_argument('--width', type=int, default=256, help='image width, pixels')
    parser.add_argument('--no-color', action='store_true',
                        help='skip the *_gtFine_color.png files')
    args = parser.parse_args(argv)
    tic = time.time()
    written = make_demo_dataset(args.out, args.seed, args.train, args.val, args.height,
                                args.width, color=not args.no_color)
    print('wrote %d train + %d val images (%dx%d) to %s in %.1f s'
          % (len(written['train']), len(written['val']), args.height, args.width, args.out,
             time.time() - tic))


if __name__ == '__main__':
    sys.exit(main())
