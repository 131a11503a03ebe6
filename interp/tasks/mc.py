"""A small shipped multiple-choice / classification set for sink interventions (``data/mc/*.jsonl``).

Four templated tasks, generated deterministically by :func:`generate` (``python -m interp.tasks.mc`` rewrites
the files): ``sentiment`` (short reviews, positive/negative), ``comparison`` (is a larger than b, yes/no),
``capitals`` (capital of a country, 4 options) and ``antonyms`` (opposite of a word, 4 options). Each item is
``{"id", "task", "prompt", "options", "answer", "split"}``; ``options`` are continuations that start with a
space, ``answer`` indexes them, and every 4th item of each task is in the ``calib`` split (the rest ``test``).

Scoring (see :mod:`interp.analyze.sink_interventions`): an option's score is the next-token log-probability of its
*first* token after the prompt, so one forward pass scores all options; :func:`option_token_ids` checks that
the options' first tokens differ under the model's tokenizer.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from interp.errors import InputError, UnknownNameError
from interp.tasks.texts import DATA_DIR

MC_DIR = DATA_DIR / "mc"
TASKS = ("sentiment", "comparison", "capitals", "antonyms")

_POS = ["wonderful", "excellent", "delightful", "fantastic", "superb", "lovely", "great", "brilliant", "charming", "perfect"]
_NEG = ["terrible", "awful", "boring", "disappointing", "horrible", "dreadful", "poor", "bland", "rude", "broken"]
_NOUNS = ["food", "movie", "hotel room", "service", "book", "concert", "coffee", "phone", "game", "show"]
_TAILS_POS = ["I would happily come back.", "I recommend it to everyone.", "It made my day.", "Worth every penny."]
_TAILS_NEG = ["I will never come back.", "I want my money back.", "It ruined my day.", "Not worth the price."]
_CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon", "Japan": "Tokyo",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Canada": "Ottawa", "Australia": "Canberra", "Russia": "Moscow",
    "China": "Beijing", "Greece": "Athens", "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Hungary": "Budapest", "Cuba": "Havana",
    "Peru": "Lima", "Thailand": "Bangkok", "England": "London", "Denmark": "Copenhagen", "Belgium": "Brussels",
    "Turkey": "Ankara", "Iran": "Tehran", "Chile": "Santiago", "Argentina": "Buenos", "Mexico": "Mexico",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "Ukraine": "Kyiv", "Morocco": "Rabat", "Nigeria": "Abuja",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Iraq": "Baghdad", "Syria": "Damascus",
}
_ANTONYMS = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark", "early": "late", "open": "closed",
    "rich": "poor", "strong": "weak", "young": "old", "high": "low", "full": "empty", "hard": "soft", "wet": "dry",
    "loud": "quiet", "thick": "thin", "clean": "dirty", "cheap": "expensive", "deep": "shallow", "true": "false",
    "first": "last", "win": "lose", "push": "pull", "buy": "sell", "above": "below",
}


def _sentiment(rng: random.Random) -> list[dict]:
    items = []
    for i in range(100):
        pos = i % 2 == 0
        adj = rng.choice(_POS if pos else _NEG)
        noun = rng.choice(_NOUNS)
        tail = rng.choice(_TAILS_POS if pos else _TAILS_NEG)
        review = f"The {noun} was {adj}. {tail}"
        items.append({"prompt": f"Review: {review}\nQuestion: Is this review positive or negative?\nAnswer:",
                      "options": [" positive", " negative"], "answer": 0 if pos else 1})
    return items


def _comparison(rng: random.Random) -> list[dict]:
    items = []
    for i in range(100):
        a, b = rng.sample(range(10, 100), 2)
        items.append({"prompt": f"Question: Is {a} larger than {b}? Answer yes or no.\nAnswer:",
                      "options": [" yes", " no"], "answer": 0 if a > b else 1})
    return items


def _capitals(rng: random.Random) -> list[dict]:
    items, countries = [], sorted(_CAPITALS)
    ok = [c for c in countries if _CAPITALS[c] not in ("Buenos", "Mexico")]  # multi-word capitals as answers only via first word
    for i in range(100):
        country = ok[i % len(ok)]
        others = rng.sample([_CAPITALS[c] for c in ok if c != country], 3)
        opts = [_CAPITALS[country]] + others
        rng.shuffle(opts)
        items.append({"prompt": f"Question: What is the capital city of {country}?\nAnswer:",
                      "options": [f" {o}" for o in opts], "answer": opts.index(_CAPITALS[country])})
    return items


def _antonyms(rng: random.Random) -> list[dict]:
    items, words = [], sorted(_ANTONYMS)
    for i in range(100):
        w = words[i % len(words)]
        others = rng.sample([_ANTONYMS[o] for o in words if o != w], 3)
        opts = [_ANTONYMS[w]] + others
        rng.shuffle(opts)
        items.append({"prompt": f"Question: What is the opposite of \"{w}\"?\nAnswer:",
                      "options": [f" {o}" for o in opts], "answer": opts.index(_ANTONYMS[w])})
    return items


_GENERATORS = {"sentiment": _sentiment, "comparison": _comparison, "capitals": _capitals, "antonyms": _antonyms}


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """All items, by task, deterministic in ``seed``."""
    out = {}
    for t in TASKS:
        items = _GENERATORS[t](random.Random(f"{seed}:{t}"))
        out[t] = [{"id": f"{t}-{i:03d}", "task": t, **it, "split": "calib" if i % 4 == 0 else "test"} for i, it in enumerate(items)]
    return out


def write(directory: Path = MC_DIR, seed: int = 0) -> list[Path]:
    from interp.io import write_text

    return [write_text(Path(directory) / f"{t}.jsonl", "".join(json.dumps(it) + "\n" for it in items))
            for t, items in generate(seed).items()]


def load_mc(tasks=None, split: str | None = None, directory: Path = MC_DIR) -> list[dict]:
    """Items of ``tasks`` (default all four) in ``split`` (``"calib"``, ``"test"`` or None for both)."""
    tasks = TASKS if tasks is None else ((tasks,) if isinstance(tasks, str) else tuple(tasks))
    if split not in (None, "calib", "test"):
        raise InputError(f"split must be 'calib', 'test' or None, got {split!r}")
    items = []
    for t in tasks:
        path = Path(directory) / f"{t}.jsonl"
        if t not in TASKS and not path.exists():
            raise UnknownNameError(f"unknown MC task {t!r}; choose from {', '.join(TASKS)}")
        items += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [it for it in items if split is None or it["split"] == split]


def option_token_ids(tokenizer, items: list[dict]) -> list[list[int]]:
    """First token id of every option of every item; raises if two options of an item share it."""
    out = []
    for it in items:
        ids = [tokenizer(o, add_special_tokens=False)["input_ids"][0] for o in it["options"]]
        if len(set(ids)) != len(ids):
            raise InputError(f"item {it['id']}: options {it['options']} share a first token; first-token scoring cannot tell them apart")
        out.append(ids)
    return out


if __name__ == "__main__":
    for p in write():
        print(p)
