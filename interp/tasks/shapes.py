"""Procedural shape images with questions, captions and deliberate language-prior traps (for ``tinyvlm``).

A scene is 1-4 colored shapes on a 4×4 grid of 16-pixel cells in a 64×64 RGB image, at most one shape per
cell, drawn from a seed. Each cell is 2×2 8-pixel patches of the tinyvlm vision tower, so the object of a
cell is carried by four image tokens (trained to read "<color> <shape> , ,").

Questions (``kind``; the answer is one word, scored by its first token):

- ``color``: "What color is the circle?" (asked only when the scene has exactly one circle);
- ``shape``: "What shape is the red object?" (exactly one red object);
- ``count``: "How many circles are there?" (0-4);
- ``exist``: "Is there a blue triangle? Answer Yes or No." (balanced). The suffix matters: the frozen
  SmolLM2-135M answers a bare "Is there ...?" about a textual object list at chance (ROC AUC 0.57 on 80
  scenes), but 0.68-0.89 when told to answer Yes or No;
- ``caption``: "Describe the image." → "A red square, a blue circle and a green cross." (row-major order).

**Language-prior traps.** In the training distribution a square is red and a triangle is green with
probability ``PRIOR_P`` = 0.9 (``PRIORS``); the other shapes take any color uniformly. The held-out trap set
(:func:`trap_set`, POPE-style) holds scenes where such a shape has a *rare* color and asks "What color is the
square?" (prior answer "red") and "Is there a red square?" (correct "No", prior answer "Yes"), with matched
positives ("Is there a blue square?" → "Yes") so that a model that says "No" to everything does not look
good. The hallucination rate is the fraction of trap questions answered with the prior answer. CHAIR-style
rates on captions: :func:`chair`.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import numpy as np

from interp.errors import InputError

IMAGE_SIZE = 64
GRID = 4
CELL = IMAGE_SIZE // GRID
SHAPES = ("square", "circle", "triangle", "cross")
PLURALS = {"square": "squares", "circle": "circles", "triangle": "triangles", "cross": "crosses"}
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 225), "yellow": (235, 205, 30),
          "purple": (145, 55, 190)}
PRIORS = {"square": "red", "triangle": "green"}
PRIOR_P = 0.9
COUNTS = tuple(str(i) for i in range(5))
OPTIONS = {"color": tuple(COLORS), "shape": SHAPES, "count": COUNTS, "exist": ("Yes", "No")}
KINDS = ("color", "shape", "count", "exist", "caption")
BACKGROUND = 235


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    row: int
    col: int


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str
    prior: str | None = None  # the answer a language prior would give (trap questions only)
    trap: bool = False


@dataclass
class Sample:
    """One image with its questions. ``seed`` redraws the same pixels (background noise, jitter, size)."""

    sample_id: str
    objects: tuple[Obj, ...]
    seed: int
    questions: list[Question] = field(default_factory=list)

    def image(self) -> np.ndarray:
        return render(self.objects, self.seed)

    def caption(self) -> str:
        return caption_text(self.objects)


def draw_scene(rng: random.Random, *, prior_p: float = PRIOR_P, n_objects: int | None = None) -> tuple[Obj, ...]:
    n = n_objects or rng.randint(1, 4)
    cells = rng.sample(range(GRID * GRID), n)
    objs = []
    for c in sorted(cells):
        shape = rng.choice(SHAPES)
        color = PRIORS[shape] if shape in PRIORS and rng.random() < prior_p else rng.choice(list(COLORS))
        objs.append(Obj(shape, color, c // GRID, c % GRID))
    return tuple(objs)


def _mask(shape: str, size: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    h = size / 2
    if shape == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= h ** 2
    if shape == "triangle":  # apex up; the half-width grows linearly from the apex to the base
        t = (dy + h) / (2 * h)
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * h)
    if shape == "cross":
        arm = size / 6
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= h)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= h))
    raise InputError(f"unknown shape {shape!r}; use one of {SHAPES}")


def render(objects, seed: int) -> np.ndarray:
    """``[64, 64, 3]`` uint8: light noisy background, each shape anti-aliased (4× supersampling) in its cell
    with a random size (10-14 px) and a ±1 px jitter."""
    rng = np.random.default_rng(seed)
    img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), BACKGROUND, dtype=np.float32)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    ss = 4
    fine = (np.arange(CELL * ss) + 0.5) / ss  # sub-pixel centres within a cell
    for o in objects:
        size = rng.uniform(10, 14)
        cx, cy = CELL / 2 + rng.uniform(-1, 1), CELL / 2 + rng.uniform(-1, 1)
        dx, dy = np.meshgrid(fine - cx, fine - cy)
        cover = _mask(o.shape, size, dx, dy).reshape(CELL, ss, CELL, ss).mean((1, 3))[..., None]  # [CELL CELL 1]
        color = np.asarray(COLORS[o.color], dtype=np.float32) + rng.normal(0, 6, 3)
        y0, x0 = o.row * CELL, o.col * CELL
        patch = img[y0:y0 + CELL, x0:x0 + CELL]
        img[y0:y0 + CELL, x0:x0 + CELL] = patch * (1 - cover) + color * cover
    return np.clip(img, 0, 255).round().astype(np.uint8)


def caption_text(objects) -> str:
    parts = [f"a {o.color} {o.shape}" for o in objects]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return body[0].upper() + body[1:] + "."


def exist_question(color: str, shape: str, present, **kw) -> Question:
    """``exist`` question about one (color, shape) pair; ``present`` holds the scene's pairs."""
    answer = "Yes" if (color, shape) in present else "No"
    return Question("exist", f"Is there a {color} {shape}? Answer Yes or No.", answer, **kw)


def pairs(objects) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """The scene's (color, shape) pairs, and every other pair in a fixed order."""
    present = {(o.color, o.shape) for o in objects}
    return present, [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]


def other_exist_question(objects, rng: random.Random, answer: str) -> Question:
    """An ``exist`` question with the given answer: a present pair for "Yes"; for "No" an absent pair that shares
    the color or the shape of a present object half the time (so that one word matching is not enough)."""
    present, absent = pairs(objects)
    if answer == "Yes":
        return exist_question(*rng.choice(sorted(present)), present)
    near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    return exist_question(*rng.choice(near if near and rng.random() < 0.5 else absent), present)


def balanced_count_question(objects, rng: random.Random) -> Question:
    """A ``count`` question aimed at a uniformly drawn answer 0-3: the shape whose count in the scene is closest to
    it (ties: the larger count). :func:`questions_for` asks about a uniformly drawn shape, so with 1-4 objects
    most of its count answers are 0 (65% of the held-out set); training on those teaches "0"."""
    names = [o.shape for o in objects]
    target = rng.randrange(4)
    best = min(abs(names.count(s) - target) - 0.5 * (names.count(s) > target) for s in SHAPES)
    s = rng.choice([s for s in SHAPES if abs(names.count(s) - target) - 0.5 * (names.count(s) > target) == best])
    return Question("count", f"How many {PLURALS[s]} are there?", str(names.count(s)))


def questions_for(objects, rng: random.Random) -> list[Question]:
    """Every well-posed ordinary question about a scene (one per kind, drawn at random among the valid ones)."""
    out = []
    shapes = [o.shape for o in objects]
    once = [s for s in SHAPES if shapes.count(s) == 1]
    if once:
        s = rng.choice(once)
        out.append(Question("color", f"What color is the {s}?", next(o.color for o in objects if o.shape == s)))
    colors = [o.color for o in objects]
    unique_colors = [c for c in COLORS if colors.count(c) == 1]
    if unique_colors:
        c = rng.choice(unique_colors)
        out.append(Question("shape", f"What shape is the {c} object?", next(o.shape for o in objects if o.color == c)))
    s = rng.choice(SHAPES)
    out.append(Question("count", f"How many {PLURALS[s]} are there?", str(shapes.count(s))))
    present, absent = pairs(objects)
    c, s = rng.choice(sorted(present)) if rng.random() < 0.5 else rng.choice(absent)
    out.append(exist_question(c, s, present))
    out.append(Question("caption", "Describe the image.", caption_text(objects)))
    return out


def dataset(seed: int, n: int, *, prior_p: float = PRIOR_P, prefix: str = "s") -> list[Sample]:
    """``n`` scenes with their ordinary questions, drawn from ``seed`` (training distribution by default)."""
    if n < 1:
        raise InputError(f"a shapes dataset needs n >= 1 samples, got {n}")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        objs = draw_scene(rng, prior_p=prior_p)
        out.append(Sample(f"{prefix}{seed}-{i}", objs, rng.randrange(2 ** 31), questions_for(objs, rng)))
    return out


def trap_set(seed: int, n: int) -> list[Sample]:
    """POPE-style held-out traps: each scene has one prior shape (square or triangle) in a rare color.

    Questions per scene: the color question (prior answer = the prior color), the existence question for the
    prior combination (correct "No", prior "Yes") and a matched positive for the true combination ("Yes")."""
    if n < 1:
        raise InputError(f"a trap set needs n >= 1 samples, got {n}")
    rng = random.Random(seed + 7919)
    out = []
    for i in range(n):
        shape = list(PRIORS)[i % len(PRIORS)]
        prior = PRIORS[shape]
        color = rng.choice([c for c in COLORS if c != prior])
        others = [o for o in draw_scene(rng, prior_p=PRIOR_P, n_objects=rng.randint(1, 3))
                  if o.shape != shape and (o.color, o.shape) != (prior, shape)]
        used = {(o.row, o.col) for o in others}
        cell = rng.choice([c for c in range(GRID * GRID) if (c // GRID, c % GRID) not in used])
        objs = tuple(sorted([*others, Obj(shape, color, cell // GRID, cell % GRID)], key=lambda o: (o.row, o.col)))
        qs = [Question("color", f"What color is the {shape}?", color, prior=prior, trap=True),
              exist_question(prior, shape, {(color, shape)}, prior="Yes", trap=True),
              exist_question(color, shape, {(color, shape)})]
        out.append(Sample(f"trap{seed}-{i}", objs, rng.randrange(2 ** 31), qs))
    return out


_MENTION = re.compile(r"\b(" + "|".join(COLORS) + r")?\s*(" + "|".join(SHAPES) + r")\b", re.IGNORECASE)


def mentions(caption: str) -> list[tuple[str | None, str]]:
    """``(color or None, shape)`` for every shape word in a caption."""
    return [((m.group(1) or "").lower() or None, m.group(2).lower()) for m in _MENTION.finditer(caption)]


def chair(caption: str, objects) -> dict[str, float]:
    """CHAIR-style counts for one caption: ``mentioned`` shape words, ``hallucinated`` ones whose shape is not
    in the image (CHAIR_i numerator), ``attr_hallucinated`` ones whose (color, shape) pair is not in the image."""
    ms = mentions(caption)
    shapes = {o.shape for o in objects}
    pairs = {(o.color, o.shape) for o in objects}
    return {"mentioned": float(len(ms)), "hallucinated": float(sum(s not in shapes for _, s in ms)),
            "attr_hallucinated": float(sum(c is not None and (c, s) not in pairs for c, s in ms))}


__all__ = ["Obj", "Question", "Sample", "dataset", "trap_set", "render", "draw_scene", "caption_text", "questions_for",
           "exist_question", "other_exist_question",
           "mentions", "chair", "SHAPES", "COLORS", "PRIORS", "PRIOR_P", "OPTIONS", "KINDS", "IMAGE_SIZE", "GRID", "CELL"]
