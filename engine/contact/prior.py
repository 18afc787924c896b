"""The category-prior baseline: human contact from the object label alone.

This is what the contact tab offers when no InteractVLM checkpoint is configured (DESIGN.md,
"Embedded defaults"). It reads object -> typically contacted body parts -> the vertices of those
parts, from the hand-written table ``OBJECT_PARTS`` below, and looks at no image. Every result
carries ``source = PRIOR_SOURCE`` ("baseline: category prior"); it is never presented as the model.

What it shares with the model (REFERENCE.md section 1):
- The answer text uses InteractVLM's template, "The contacting body parts are {parts}, and the
  contact region is [SEG]." (``answer_text``).
- A body part is named when at least 10% of its vertices are in contact
  (``part_contact_summary``); training and inference reuse it to name parts from contacts.

Part names are the 19 of ``engine.body.parts.DEFAULT_PART_NAMES``. The open body and the SMPL
family use them; a body whose user segmentation renames parts simply gets no contact on table
parts it lacks.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from engine.contact.prompts import human_answer
from engine.contact.vocabulary import resolve_object_label
from engine.errors import InputError

PRIOR_SOURCE = "baseline: category prior"
PART_THRESHOLD = 0.5  # a part is listed in ``parts`` when its prior is at least this (F1's threshold)
MIN_PART_FRACTION = 0.10  # REFERENCE.md: a part is named when >= 10% of its vertices are in contact


def _row(**parts: float) -> Mapping[str, float]:
    return MappingProxyType(dict(parts))


def _both(part: str, probability: float) -> dict[str, float]:
    """The same prior on the left and right ``part``."""
    return {f"left_{part}": probability, f"right_{part}": probability}


# Shared rows. Right-handed use is assumed for one-hand objects (most people, most photos), so the
# left hand gets a lower prior rather than none. Feet touching the *floor* are never counted for an
# object: floor contact is the ``supporting`` label's row.
_ONE_HAND = _row(right_hand=0.8, left_hand=0.4)  # cups, cutlery, food, small tools
_ONE_HAND_FIRM = _row(right_hand=0.9, left_hand=0.2)  # tools held in the dominant hand only
_TWO_HANDS = _row(**_both("hand", 0.8))  # held or worked with both hands
_TWO_HANDS_LIGHT = _row(**_both("hand", 0.6))  # touched rather than held
_APPLIANCE = _row(right_hand=0.8, left_hand=0.4)  # opened, pushed or pressed by hand
_SIT = _row(hips=0.9, **_both("thigh", 0.8), lower_back=0.5, upper_back=0.3)  # chair-like seats
_SIT_BACKLESS = _row(hips=0.9, **_both("thigh", 0.8), lower_back=0.2)  # benches, toilets
_TABLE = _row(**_both("hand", 0.7), **_both("forearm", 0.5), **_both("thigh", 0.2))
_ANIMAL_PET = _row(**_both("hand", 0.7), **_both("forearm", 0.3), **_both("thigh", 0.2))
_ANIMAL_LARGE = _row(**_both("hand", 0.6), **_both("forearm", 0.2))
_RIDE_ANIMAL = _row(hips=0.9, **_both("thigh", 0.9), **_both("shin", 0.6), **_both("hand", 0.6))
_RIDE_CYCLE = _row(**_both("hand", 0.9), hips=0.8, **_both("foot", 0.7), **_both("thigh", 0.4))
_RIDE_MOTOR = _row(**_both("hand", 0.9), hips=0.9, **_both("thigh", 0.8), **_both("foot", 0.6))
_VEHICLE_OUTSIDE = _row(right_hand=0.6, left_hand=0.5, hips=0.4, **_both("thigh", 0.3), lower_back=0.3)
_VEHICLE_INSIDE = _row(**_both("foot", 0.6), hips=0.5, **_both("thigh", 0.4), **_both("hand", 0.5))
_BOARD = _row(**_both("foot", 0.95), **_both("hand", 0.1))  # ridden standing
_STREET_FIXTURE = _row(right_hand=0.6, left_hand=0.4, hips=0.2)  # leaned on, touched
_WORN_HEAD = _row(head=0.95, right_hand=0.2)

OBJECT_PARTS: Mapping[str, Mapping[str, float]] = MappingProxyType({
    # vehicles and things ridden
    "bicycle": _RIDE_CYCLE, "motorcycle": _RIDE_MOTOR, "car": _VEHICLE_OUTSIDE, "truck": _VEHICLE_OUTSIDE,
    "airplane": _VEHICLE_INSIDE, "bus": _VEHICLE_INSIDE, "train": _VEHICLE_INSIDE,
    "boat": _row(**_both("foot", 0.7), hips=0.5, **_both("thigh", 0.4), **_both("hand", 0.5)),
    "skateboard": _BOARD, "snowboard": _BOARD, "skis": _BOARD,
    "surfboard": _row(**_both("foot", 0.8), **_both("hand", 0.4), chest=0.3, abdomen=0.3),
    # street fixtures
    "traffic light": _STREET_FIXTURE, "stop sign": _STREET_FIXTURE, "parking meter": _STREET_FIXTURE,
    "fire hydrant": _row(**_both("hand", 0.5), hips=0.3, right_foot=0.2),
    # animals: pets are held and stroked, large animals touched or ridden
    "bird": _row(right_hand=0.6, left_hand=0.2, **_both("forearm", 0.2)),
    "cat": _ANIMAL_PET, "dog": _ANIMAL_PET, "sheep": _ANIMAL_LARGE, "cow": _ANIMAL_LARGE,
    "bear": _ANIMAL_LARGE, "zebra": _ANIMAL_LARGE, "giraffe": _row(right_hand=0.6, left_hand=0.3),
    "horse": _RIDE_ANIMAL, "elephant": _row(hips=0.8, **_both("thigh", 0.8), **_both("shin", 0.5),
                                            **_both("hand", 0.5)),
    # worn and carried
    "backpack": _row(upper_back=0.9, lower_back=0.6, chest=0.3, **_both("upper_arm", 0.2)),
    "handbag": _row(right_hand=0.6, left_hand=0.4, right_upper_arm=0.3, right_forearm=0.3),
    "bag": _row(right_hand=0.7, left_hand=0.5, right_upper_arm=0.2, right_forearm=0.2),
    "suitcase": _row(right_hand=0.8, left_hand=0.3),
    "tie": _row(neck=0.9, chest=0.8, abdomen=0.3),
    "hat": _WORN_HEAD, "earphone": _WORN_HEAD,
    "umbrella": _row(right_hand=0.8, left_hand=0.4),
    # sports and play
    "frisbee": _row(right_hand=0.8, left_hand=0.3),
    "sports ball": _row(**_both("hand", 0.6), right_foot=0.4, left_foot=0.3),
    "kite": _TWO_HANDS, "baseball bat": _row(**_both("hand", 0.9)),
    "baseball glove": _row(left_hand=0.9, right_hand=0.2),
    "tennis racket": _row(right_hand=0.9, left_hand=0.3),
    "teddy bear": _row(**_both("hand", 0.8), chest=0.5, **_both("forearm", 0.4)),
    # tableware and food
    "bottle": _ONE_HAND, "wine glass": _ONE_HAND, "cup": _ONE_HAND, "mug": _ONE_HAND,
    "fork": _ONE_HAND_FIRM, "knife": _ONE_HAND_FIRM, "spoon": _ONE_HAND_FIRM, "bowl": _row(**_both("hand", 0.7)),
    "banana": _ONE_HAND, "apple": _ONE_HAND, "sandwich": _ONE_HAND, "orange": _ONE_HAND,
    "broccoli": _ONE_HAND, "carrot": _ONE_HAND, "hot dog": _ONE_HAND, "pizza": _ONE_HAND,
    "donut": _ONE_HAND, "cake": _TWO_HANDS_LIGHT,
    # furniture: seats, beds, tables, storage
    "chair": _SIT, "bench": _SIT_BACKLESS, "toilet": _SIT_BACKLESS,
    "couch": _row(hips=0.9, **_both("thigh", 0.8), lower_back=0.7, upper_back=0.6, **_both("forearm", 0.3)),
    "bed": _row(hips=0.9, **_both("thigh", 0.8), upper_back=0.6, lower_back=0.6, head=0.5, **_both("shin", 0.5)),
    "dining table": _TABLE, "table": _TABLE,
    "storage furniture": _row(right_hand=0.8, left_hand=0.4, hips=0.2),
    "door": _row(right_hand=0.8, left_hand=0.3),
    "potted plant": _TWO_HANDS_LIGHT, "vase": _row(**_both("hand", 0.7)), "clock": _TWO_HANDS_LIGHT,
    # appliances and fixtures of the home
    "microwave": _APPLIANCE, "oven": _APPLIANCE, "toaster": _APPLIANCE, "refrigerator": _APPLIANCE,
    "dishwasher": _APPLIANCE, "faucet": _row(right_hand=0.8, left_hand=0.5),
    "sink": _row(**_both("hand", 0.8), **_both("forearm", 0.3)),
    "trash can": _row(right_hand=0.6, left_hand=0.3, right_foot=0.3),
    # electronics and small tools
    "tv": _row(right_hand=0.5, left_hand=0.4), "display": _row(right_hand=0.6, left_hand=0.5),
    "laptop": _row(**_both("hand", 0.8), **_both("thigh", 0.4)), "keyboard": _row(**_both("hand", 0.9)),
    "mouse": _row(right_hand=0.9), "remote": _ONE_HAND, "cell phone": _row(right_hand=0.8, left_hand=0.4, head=0.3),
    "book": _TWO_HANDS, "scissors": _ONE_HAND_FIRM, "hair drier": _row(right_hand=0.8, left_hand=0.3, head=0.2),
    "toothbrush": _row(right_hand=0.9, head=0.3),
    # ground or scene contact (DAMON's key): standing; sitting on the ground is the lesser case
    "supporting": _row(**_both("foot", 0.9), hips=0.3, **_both("shin", 0.1)),
})


@dataclass(frozen=True)
class PriorPrediction:
    """Contact predicted by the category prior for one object label.

    object_label: the resolved known label (``OBJECT_LABELS``).
    topology: the body's topology id; ``probabilities`` is per vertex of it.
    probabilities: (V,) float32 in [0, 1], read-only; every vertex of a table part holds that part's
        prior, every other vertex 0.
    parts: names of the contacted parts with prior >= ``PART_THRESHOLD``, by descending prior
        (ties in the body's part order).
    answer: the template sentence naming ``parts`` (``answer_text``).
    source: always ``PRIOR_SOURCE``; shown and exported with every result.
    """

    object_label: str
    topology: str
    probabilities: np.ndarray
    parts: tuple[str, ...]
    answer: str
    source: str = PRIOR_SOURCE


def answer_text(parts) -> str:
    """InteractVLM's answer sentence (``prompts.human_answer``), parts joined with ", " as the release does."""
    return human_answer([str(part) for part in parts])


def _part_priors(body, row: Mapping[str, float]) -> np.ndarray:
    """(P,) prior per part of ``body`` in its part order; parts the body lacks are dropped."""
    priors = np.zeros(len(body.part_names), dtype=np.float32)
    for part, probability in row.items():
        if part in body.part_names:
            priors[body.part_names.index(part)] = probability
    return priors


def _listed_parts(body, priors: np.ndarray) -> tuple[str, ...]:
    present = np.bincount(body.part_labels, minlength=len(body.part_names)) > 0
    chosen = [i for i in range(len(priors)) if priors[i] >= PART_THRESHOLD and present[i]]
    chosen.sort(key=lambda i: -priors[i])  # stable: ties keep the body's part order
    return tuple(body.part_names[i] for i in chosen)


def predict_category_prior(body, object_label: str) -> PriorPrediction:
    """Contact on ``body`` (a ``BodyModel``) for free-text ``object_label`` from ``OBJECT_PARTS``.

    Raises ``InputError`` for text that does not resolve to a known label.
    """
    label = resolve_object_label(object_label)
    priors = _part_priors(body, OBJECT_PARTS[label])
    probabilities = priors[np.asarray(body.part_labels)].astype(np.float32)
    probabilities.setflags(write=False)
    parts = _listed_parts(body, priors)
    return PriorPrediction(object_label=label, topology=body.topology, probabilities=probabilities,
                           parts=parts, answer=answer_text(parts))


def part_contact_summary(body, probabilities, threshold: float = PART_THRESHOLD,
                         min_fraction: float = MIN_PART_FRACTION) -> tuple[str, ...]:
    """Parts of ``body`` with at least ``min_fraction`` of their vertices at ``probabilities >= threshold``.

    probabilities: (V,) per-vertex contact on the body's topology. Parts come in the body's part
    order (``DEFAULT_PART_NAMES`` for the built-in and SMPL-family bodies), so the answer text built
    from them is stable.
    """
    values = np.asarray(probabilities, dtype=np.float64)
    if values.shape != (body.num_vertices,):
        raise InputError(f"probabilities must have shape ({body.num_vertices},) for {body.topology}, "
                         f"got {values.shape}")
    if not np.isfinite(values).all():
        raise InputError("probabilities contain NaN or inf")
    count = len(body.part_names)
    sizes = np.bincount(body.part_labels, minlength=count)
    hits = np.bincount(body.part_labels, weights=values >= threshold, minlength=count)
    # Division, not ``hits >= min_fraction * sizes``: 0.1 * 30 rounds above 3, so exactly 10% would fail.
    named = [i for i in range(count) if sizes[i] and hits[i] / sizes[i] >= min_fraction]
    return tuple(body.part_names[i] for i in named)

