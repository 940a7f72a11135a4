"""Write the demo sentiment set (lightft/demo/sentiment_{train,validation}.jsonl) from our own templates.

Every sentence is composed here from hand-written templates and word lists — nothing is taken from
an existing data set. Negated templates ("was not ...") flip the polarity, so a model has to read
more than single words. Deterministic: `python -m lightft.demo.generate` rewrites identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = {
    "film": ["the film", "this movie", "the sequel", "the documentary", "the ending", "the soundtrack",
             "the lead actor", "the script", "the plot", "the animation", "this thriller", "the comedy"],
    "food": ["the pasta", "our waiter", "the soup", "this restaurant", "the dessert", "the pizza",
             "the service", "the curry", "the coffee", "the breakfast", "the salad", "the kitchen staff"],
    "product": ["this phone", "the battery", "the headphones", "this blender", "the charger", "the laptop",
                "this vacuum", "the keyboard", "the camera", "the mattress", "this kettle", "the app"],
}
POSITIVE = ["wonderful", "excellent", "delightful", "superb", "fantastic", "brilliant", "lovely", "charming",
            "outstanding", "impressive", "terrific", "enjoyable", "reliable", "fresh", "gorgeous", "moving"]
NEGATIVE = ["terrible", "awful", "disappointing", "dreadful", "boring", "mediocre", "horrible", "dull",
            "sloppy", "useless", "bland", "annoying", "flimsy", "stale", "clumsy", "tedious"]
INTENSIFIERS = ["", "really ", "truly ", "absolutely ", "quite ", "so ", "incredibly ", "rather "]
POS_VERBS = ["I loved", "we adored", "my family enjoyed", "I would happily recommend", "everyone praised",
             "I keep going back to"]
NEG_VERBS = ["I hated", "we regretted buying", "my family disliked", "I would never recommend",
             "everyone complained about", "I gave up on"]
POS_ENDINGS = ["worth every penny.", "a real treat.", "five stars from me.", "I will be back.",
               "better than I expected.", "a pleasant surprise."]
NEG_ENDINGS = ["a waste of money.", "never again.", "one star at most.", "I want a refund.",
               "worse than I expected.", "what a letdown."]

# {s}: subject, {a}: adjective of the sentence's polarity, {o}: adjective of the other polarity,
# {i}: intensifier, {v}: verb phrase of the polarity, {e}: ending of the polarity
TEMPLATES = [
    "{s} was {i}{a}.", "{S} is {i}{a}, {e}", "{v} {s}.", "{v} {s}; {e}", "honestly, {s} felt {i}{a}.",
    "{S} turned out {i}{a}.", "{S} was not {o} at all.", "{S} is anything but {o}.",
    "I expected {s} to be {o}, but it was {a}.", "{S} was {i}{a} from start to finish.",
    "not {o}: {s} was {a}.", "{S}? {i}{a}. {e}",
]


def sentence(rng: random.Random, positive: bool) -> str:
    domain = rng.choice(sorted(SUBJECTS))
    subject = rng.choice(SUBJECTS[domain])
    same, other = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
    text = rng.choice(TEMPLATES).format(
        s=subject, S=subject[0].upper() + subject[1:], a=rng.choice(same), o=rng.choice(other),
        i=rng.choice(INTENSIFIERS), v=rng.choice(POS_VERBS if positive else NEG_VERBS),
        e=rng.choice(POS_ENDINGS if positive else NEG_ENDINGS))
    return text[0].upper() + text[1:]


def build(n: int, rng: random.Random, seen: set[str]) -> list[dict[str, str]]:
    """n unique sentences (none in `seen`), half positive, in random order."""
    rows = []
    while len(rows) < n:
        positive = len(rows) % 2 == 0
        text = sentence(rng, positive)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": "positive" if positive else "negative"})
    rng.shuffle(rows)
    return rows


def main(folder: Path = Path(__file__).parent) -> None:
    rng, seen = random.Random(20240611), set()
    for split, n in (("train", 600), ("validation", 150)):
        rows = build(n, rng, seen)
        (folder / f"sentiment_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
