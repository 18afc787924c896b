"""Object and affordance vocabularies, and the rules that turn free text into a known label.

Torch-free on purpose: the annotation store (``annotations.vocabulary``) imports the affordance
tuples from here, and the store never imports torch.

Sources (REFERENCE.md sections 1 and 3):
- Affordances: PIAD's 17 in PIAD's column order, then LEMON/3DIR's four extras.
- Objects: the 80 COCO classes as COCO spells them, **without** ``person``: the body we predict on
  *is* the person, and person-to-person contact is not an object category here. Then PIAD's 23 seen
  classes (12 of them are COCO names already and are listed once), then ``supporting``, DAMON's key
  for ground or scene contact.

Free text resolves in this order (``resolve_object_label``):
1. Reject non-text, empty, over-long (> ``MAX_LABEL_LENGTH``) text, and characters outside
   ``[a-z0-9 _'-]`` after lower-casing: labels end up inside HTML and file names.
2. Lower-case, read ``_`` and ``-`` as spaces, collapse runs of whitespace, drop a leading article.
3. Exact label, then the synonym table, then simple English plurals of the last word
   ("chairs", "knives", "benches", "wine glasses"), each tried against labels and synonyms.
4. Anything else raises ``InputError`` with up to three close matches.

Synonym decisions (``OBJECT_SYNONYMS``):
- "tv", "television" -> COCO ``tv``; "monitor", "screen", "computer monitor" -> PIAD ``display``:
  PIAD's display class is desk monitors, COCO's tv class is television sets.
- "table" stays PIAD ``table`` (a generic table, and "desk" maps there); COCO's "dining table" stays
  ``dining table``. Both are known labels with the same prior row.
- "ground", "floor", "scene" and friends -> ``supporting``.
"""
from __future__ import annotations

import difflib
import re
from types import MappingProxyType

from engine.errors import InputError

PIAD_AFFORDANCES: tuple[str, ...] = (
    "grasp", "contain", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move",
    "display", "push", "listen", "wear", "press", "cut", "stab",
)
LEMON_EXTRA_AFFORDANCES: tuple[str, ...] = ("pull", "ride", "play", "carry")
AFFORDANCES: tuple[str, ...] = PIAD_AFFORDANCES + LEMON_EXTRA_AFFORDANCES

# COCO's 80 classes in COCO's category order, minus "person" (see the module docstring).
COCO_OBJECTS: tuple[str, ...] = (
    "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
PIAD_SEEN_OBJECTS: tuple[str, ...] = (
    "bag", "bed", "bottle", "bowl", "chair", "clock", "dishwasher", "display", "door", "earphone", "faucet",
    "hat", "keyboard", "knife", "laptop", "microwave", "mug", "refrigerator", "scissors", "storage furniture",
    "table", "trash can", "vase",
)
SUPPORTING = "supporting"
# Every known object label once, COCO order first: the order the studio lists them in.
OBJECT_LABELS: tuple[str, ...] = tuple(dict.fromkeys(COCO_OBJECTS + PIAD_SEEN_OBJECTS + (SUPPORTING,)))

OBJECT_SYNONYMS = MappingProxyType({
    # furniture
    "sofa": "couch", "settee": "couch", "armchair": "chair", "stool": "chair", "seat": "chair",
    "desk": "table", "cupboard": "storage furniture", "cabinet": "storage furniture",
    "wardrobe": "storage furniture", "dresser": "storage furniture", "drawer": "storage furniture",
    "shelf": "storage furniture", "bookshelf": "storage furniture", "fridge": "refrigerator",
    "tap": "faucet", "bin": "trash can", "trash": "trash can", "trash bin": "trash can",
    "garbage can": "trash can", "rubbish bin": "trash can", "wastebasket": "trash can",
    # screens and electronics (see the module docstring for tv vs display)
    "television": "tv", "tv set": "tv", "monitor": "display", "computer monitor": "display",
    "screen": "display", "phone": "cell phone", "mobile phone": "cell phone", "mobile": "cell phone",
    "smartphone": "cell phone", "cellphone": "cell phone", "remote control": "remote",
    "computer mouse": "mouse", "mice": "mouse", "headphones": "earphone", "headphone": "earphone",
    "earbuds": "earphone", "headset": "earphone", "hairdryer": "hair drier", "hair dryer": "hair drier",
    "blow dryer": "hair drier", "microwave oven": "microwave",
    # vehicles and boards
    "bike": "bicycle", "motorbike": "motorcycle", "scooter": "motorcycle", "plane": "airplane",
    "aeroplane": "airplane", "ship": "boat", "canoe": "boat", "kayak": "boat", "ski": "skis",
    "skate board": "skateboard", "surf board": "surfboard", "snow board": "snowboard",
    # sports and play
    "ball": "sports ball", "football": "sports ball", "soccer ball": "sports ball",
    "basketball": "sports ball", "racket": "tennis racket", "racquet": "tennis racket",
    "tennis racquet": "tennis racket", "bat": "baseball bat", "glove": "baseball glove",
    "teddy": "teddy bear", "stuffed animal": "teddy bear",
    # tableware and food
    "glass": "wine glass", "coffee mug": "mug", "doughnut": "donut", "hotdog": "hot dog",
    # worn and carried
    "cap": "hat", "purse": "handbag", "rucksack": "backpack", "luggage": "suitcase", "necktie": "tie",
    # other
    "plant": "potted plant", "flower pot": "potted plant", "hydrant": "fire hydrant",
    "ground": "supporting", "floor": "supporting", "scene": "supporting", "terrain": "supporting",
    "grass": "supporting", "road": "supporting", "street": "supporting",
})
AFFORDANCE_SYNONYMS = MappingProxyType({"wrap grasp": "wrapgrasp"})

MAX_LABEL_LENGTH = 64
_ALLOWED = re.compile(r"[a-z0-9 _'\-]+")
_ARTICLES = ("a ", "an ", "the ")
_MAX_SUGGESTIONS = 3


def clean_text(text, what: str = "label") -> str:
    """Lower-cased, single-spaced text with ``_``/``-`` read as spaces; ``InputError`` if unsafe or too long."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, got {type(text).__name__}")
    lowered = " ".join(text.lower().split())
    if not lowered:
        raise InputError(f"{what} is empty: give a name such as 'chair'")
    if len(lowered) > MAX_LABEL_LENGTH:
        raise InputError(f"{what} is {len(lowered)} characters long; at most {MAX_LABEL_LENGTH} are accepted")
    if not _ALLOWED.fullmatch(lowered):
        # Name the bad characters by code point only: echoing them could inject markup into the page.
        bad = sorted({char for char in lowered if not _ALLOWED.fullmatch(char)})
        codes = ", ".join(f"U+{ord(char):04X}" for char in bad)
        raise InputError(f"{what} has characters that are not accepted ({codes}); "
                         "use letters, digits, spaces and _ ' - only")
    return " ".join(lowered.replace("_", " ").replace("-", " ").split())


def _without_article(text: str) -> str:
    for article in _ARTICLES:
        if text.startswith(article) and len(text) > len(article):
            return text[len(article):]
    return text


def singular_forms(text: str) -> tuple[str, ...]:
    """Candidate singulars of the last word, most specific rule first ("knives" -> "knife", "knif", ...)."""
    head, _, last = text.rpartition(" ")
    prefix = f"{head} " if head else ""
    forms = []
    if last.endswith("ies") and len(last) > 4:
        forms.append(last[:-3] + "y")
    if last.endswith("ves"):
        forms += [last[:-3] + "fe", last[:-3] + "f"]
    if last.endswith("es"):
        forms.append(last[:-2])
    if last.endswith("s") and not last.endswith("ss"):
        forms.append(last[:-1])
    return tuple(prefix + form for form in forms if form)


def _lookup(text: str, labels: tuple[str, ...], synonyms) -> str | None:
    if text in labels:
        return text
    return synonyms.get(text)


def _resolve(text: str, labels: tuple[str, ...], synonyms) -> str | None:
    for candidate in (text, *singular_forms(text)):
        found = _lookup(candidate, labels, synonyms)
        if found is not None:
            return found
    return None


def close_matches(text: str, labels: tuple[str, ...], synonyms) -> tuple[str, ...]:
    """Up to three known labels whose name, or one of whose synonyms, is spelled close to ``text``."""
    names = list(labels) + list(synonyms)
    matches = difflib.get_close_matches(text, names, n=len(names), cutoff=0.6)
    resolved = dict.fromkeys(_lookup(name, labels, synonyms) for name in matches)
    return tuple(resolved)[:_MAX_SUGGESTIONS]


def _unknown(kind: str, text: str, suggestions: tuple[str, ...], how_to_list: str) -> InputError:
    hint = f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    return InputError(f"unknown {kind} {text!r}.{hint} {how_to_list}.")


def resolve_object_label(text: str) -> str:
    """Free text -> one of ``OBJECT_LABELS`` ("Chairs" -> "chair", "sofa" -> "couch"); else ``InputError``."""
    cleaned = _without_article(clean_text(text, "object label"))
    found = _resolve(cleaned, OBJECT_LABELS, OBJECT_SYNONYMS)
    if found is None:
        raise _unknown("object", cleaned, close_matches(cleaned, OBJECT_LABELS, OBJECT_SYNONYMS),
                       f"Pick one of the {len(OBJECT_LABELS)} known object labels (the label list shows them all)")
    return found


def resolve_affordance(text: str) -> str:
    """Free text -> one of ``AFFORDANCES`` ("Wrap grasp" -> "wrapgrasp"); else ``InputError``."""
    cleaned = clean_text(text, "affordance")
    found = _lookup(cleaned, AFFORDANCES, AFFORDANCE_SYNONYMS) or _lookup(cleaned.replace(" ", ""), AFFORDANCES, {})
    if found is None:
        raise _unknown("affordance", cleaned, close_matches(cleaned, AFFORDANCES, AFFORDANCE_SYNONYMS),
                       f"Known: {', '.join(AFFORDANCES)}")
    return found
