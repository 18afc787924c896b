"""The category-prior baseline and the object/affordance vocabularies (REFERENCE.md sections 1 and 3)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.body.parts import DEFAULT_PART_NAMES
from engine.contact.prior import (OBJECT_PARTS, PRIOR_SOURCE, answer_text, part_contact_summary,
                                  predict_category_prior)
from engine.contact.vocabulary import (AFFORDANCES, COCO_OBJECTS, OBJECT_LABELS, PIAD_AFFORDANCES,
                                       PIAD_SEEN_OBJECTS, resolve_affordance, resolve_object_label)
from engine.errors import InputError


def _expected_probabilities(body, row: dict[str, float]) -> np.ndarray:
    expected = np.zeros(body.num_vertices, dtype=np.float32)
    for part, probability in row.items():
        expected[body.part_vertex_ids(part)] = probability
    return expected


@pytest.mark.parametrize("label, row, parts", [
    ("chair", {"hips": 0.9, "left_thigh": 0.8, "right_thigh": 0.8, "lower_back": 0.5, "upper_back": 0.3},
     ("hips", "left_thigh", "right_thigh", "lower_back")),
    ("bicycle", {"left_hand": 0.9, "right_hand": 0.9, "hips": 0.8, "left_foot": 0.7, "right_foot": 0.7,
                 "left_thigh": 0.4, "right_thigh": 0.4},
     ("left_hand", "right_hand", "hips", "left_foot", "right_foot")),
    ("cup", {"right_hand": 0.8, "left_hand": 0.4}, ("right_hand",)),
])
def test_prior_contacts_are_whole_parts_with_the_table_probabilities(open_body, label, row, parts):
    prediction = predict_category_prior(open_body, label)
    assert dict(OBJECT_PARTS[label]) == row
    np.testing.assert_array_equal(prediction.probabilities, _expected_probabilities(open_body, row))
    assert prediction.parts == parts
    assert prediction.object_label == label and prediction.topology == "openbody-v1"
    assert prediction.probabilities.dtype == np.float32 and prediction.probabilities.shape == (10614,)
    touched = set(open_body.part_labels[prediction.probabilities > 0])
    assert {open_body.part_names[i] for i in touched} == set(row)
    for part in open_body.part_names:  # one value per part: the part's prior, or 0
        values = np.unique(prediction.probabilities[open_body.part_vertex_ids(part)])
        assert values.tolist() == [pytest.approx(row.get(part, 0.0))]


def test_prior_is_labelled_as_a_baseline_and_answers_in_the_template(open_body):
    prediction = predict_category_prior(open_body, "chair")
    assert prediction.source == PRIOR_SOURCE == "baseline: category prior"
    assert prediction.answer == ("The contacting body parts are hips, left thigh, right thigh, lower back, "
                                 "and the contact region is [SEG].")
    assert predict_category_prior(open_body, "cup").answer == \
        "The contacting body parts are right hand, and the contact region is [SEG]."


def test_answer_text_joins_parts_as_the_release_trains():
    # the release: ', '.join(body_parts) in HCONTACT_PARTS_ANSWER_LIST[0]; no part gives an empty list
    assert answer_text([]) == "The contacting body parts are , and the contact region is [SEG]."
    assert answer_text(["left_foot", "right_foot"]) == \
        "The contacting body parts are left foot, right foot, and the contact region is [SEG]."
    assert answer_text(("head", "neck", "upper_back")) == \
        "The contacting body parts are head, neck, upper back, and the contact region is [SEG]."


def test_prior_probabilities_are_read_only(open_body):
    prediction = predict_category_prior(open_body, "bicycle")
    with pytest.raises(ValueError):
        prediction.probabilities[0] = 1.0
    with pytest.raises(AttributeError):
        prediction.object_label = "car"


def test_prior_accepts_synonyms_plurals_and_case(open_body):
    assert predict_category_prior(open_body, "  Chairs ").object_label == "chair"
    sofa = predict_category_prior(open_body, "sofa")
    assert sofa.object_label == "couch"
    np.testing.assert_array_equal(sofa.probabilities, predict_category_prior(open_body, "couch").probabilities)


def test_prior_rejects_unknown_labels_with_a_suggestion(open_body):
    with pytest.raises(InputError, match=r"unknown object 'chiar'\. Did you mean 'chair'") as caught:
        predict_category_prior(open_body, "chiar")
    assert "known object labels" in str(caught.value)
    assert "OBJECT_LABELS" not in str(caught.value) and ".py" not in str(caught.value)  # no source names shown


def test_every_vocabulary_label_has_a_valid_prior_row():
    assert set(OBJECT_PARTS) == set(OBJECT_LABELS)
    for label, row in OBJECT_PARTS.items():
        assert set(row) <= set(DEFAULT_PART_NAMES), label
        assert all(0.0 < probability <= 1.0 for probability in row.values()), label
        assert max(row.values()) >= 0.5, f"{label} would name no part"
    with pytest.raises(TypeError):
        OBJECT_PARTS["chair"]["head"] = 1.0  # the table is immutable


def test_supporting_is_floor_contact_at_the_feet(open_body):
    prediction = predict_category_prior(open_body, "the floor")
    assert prediction.object_label == "supporting"
    assert prediction.parts == ("left_foot", "right_foot")
    assert prediction.probabilities[open_body.part_vertex_ids("left_foot")].tolist()[0] == pytest.approx(0.9)


# --- part_contact_summary -------------------------------------------------------------------------------------------

def _fake_body(sizes: dict[str, int]) -> SimpleNamespace:
    """A duck-typed body whose parts have exactly ``sizes`` vertices, in DEFAULT_PART_NAMES order."""
    labels = np.concatenate([np.full(sizes.get(name, 0), i) for i, name in enumerate(DEFAULT_PART_NAMES)])
    return SimpleNamespace(part_names=DEFAULT_PART_NAMES, part_labels=labels.astype(np.int64),
                           num_vertices=len(labels), topology="fake")


def _in_contact(body, counts: dict[str, int], value: float = 1.0) -> np.ndarray:
    probabilities = np.zeros(body.num_vertices)
    for part, count in counts.items():
        start = int(np.nonzero(body.part_labels == DEFAULT_PART_NAMES.index(part))[0][0])
        probabilities[start:start + count] = value
    return probabilities


def test_part_summary_names_a_part_from_exactly_ten_percent():
    body = _fake_body({"head": 1000, "neck": 30, "left_hand": 30, "right_foot": 1000})
    # 100/1000 and 3/30 are exactly 10%; 99/1000 (9.9%) and 2/30 are not.
    probabilities = _in_contact(body, {"right_foot": 100, "head": 99, "neck": 3, "left_hand": 2})
    assert part_contact_summary(body, probabilities) == ("neck", "right_foot")


def test_part_summary_thresholds_at_one_half_and_keeps_part_order():
    body = _fake_body({"head": 10, "chest": 10, "left_hand": 10, "right_hand": 10})
    probabilities = _in_contact(body, {"right_hand": 5, "head": 5}, value=0.5)
    probabilities += _in_contact(body, {"left_hand": 10}, value=0.4999)
    assert part_contact_summary(body, probabilities) == ("head", "right_hand")
    assert part_contact_summary(body, probabilities, threshold=0.4) == ("head", "left_hand", "right_hand")
    assert part_contact_summary(body, probabilities, min_fraction=0.6) == ()


def test_part_summary_of_the_prior_matches_its_named_parts(open_body):
    prediction = predict_category_prior(open_body, "bicycle")
    assert part_contact_summary(open_body, prediction.probabilities) == \
        ("hips", "left_hand", "right_hand", "left_foot", "right_foot")
    ids = open_body.part_vertex_ids("neck")
    needed = int(np.ceil(0.1 * len(ids)))
    probabilities = np.zeros(open_body.num_vertices)
    probabilities[ids[:needed]] = 1.0
    assert part_contact_summary(open_body, probabilities) == ("neck",)
    probabilities[ids[needed - 1]] = 0.0
    assert part_contact_summary(open_body, probabilities) == ()


def test_part_summary_rejects_wrong_shapes_and_nan(open_body):
    with pytest.raises(InputError, match=r"shape \(10614,\)"):
        part_contact_summary(open_body, np.zeros(6890))
    bad = np.zeros(open_body.num_vertices)
    bad[3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        part_contact_summary(open_body, bad)


# --- vocabulary -----------------------------------------------------------------------------------------------------

def test_vocabulary_sizes_and_order():
    assert len(COCO_OBJECTS) == 79 and "person" not in OBJECT_LABELS
    assert len(PIAD_SEEN_OBJECTS) == 23
    assert len(OBJECT_LABELS) == len(set(OBJECT_LABELS)) == 79 + 11 + 1
    assert OBJECT_LABELS[0] == "bicycle" and OBJECT_LABELS[-1] == "supporting"
    assert PIAD_AFFORDANCES[:3] == ("grasp", "contain", "lift") and len(PIAD_AFFORDANCES) == 17
    assert AFFORDANCES[17:] == ("pull", "ride", "play", "carry")


@pytest.mark.parametrize("text, label", [
    ("Chairs", "chair"), ("knives", "knife"), ("benches", "bench"), ("Wine_Glasses", "wine glass"),
    ("trash-cans", "trash can"), ("sofa", "couch"), ("Mobile  Phone", "cell phone"), ("smartphone", "cell phone"),
    ("bike", "bicycle"), ("motorbike", "motorcycle"), ("television", "tv"), ("TVs", "tv"), ("monitor", "display"),
    ("ground", "supporting"), ("Floor", "supporting"), ("racket", "tennis racket"), ("glass", "wine glass"),
    ("fridge", "refrigerator"), ("bin", "trash can"), ("headphones", "earphone"), ("cupboard", "storage furniture"),
    ("cabinet", "storage furniture"), ("desk", "table"), ("table", "table"), ("dining table", "dining table"),
    ("skis", "skis"), ("scissors", "scissors"), ("buses", "bus"), ("a cup", "cup"), ("mice", "mouse"),
])
def test_object_labels_resolve(text, label):
    assert resolve_object_label(text) == label


@pytest.mark.parametrize("text, message", [
    ("<b>chair</b>", r"U\+003C, U\+003E.*letters, digits"),
    ("chair\"onload=", r"U\+0022, U\+003D"),
    ("x" * 65, "65 characters long; at most 64"),
    ("   ", "empty"),
    (None, "must be text"),
])
def test_unsafe_or_odd_labels_are_rejected(text, message):
    with pytest.raises(InputError, match=message) as caught:
        resolve_object_label(text)
    assert "<" not in str(caught.value)  # never echo markup back into the page


def test_long_label_at_the_limit_is_judged_on_its_words():
    with pytest.raises(InputError, match="unknown object"):
        resolve_object_label("y" * 64)


def test_affordances_resolve():
    assert resolve_affordance("Wrap grasp") == "wrapgrasp"
    assert resolve_affordance("wrap-grasp") == "wrapgrasp"
    assert resolve_affordance(" SIT ") == "sit"
    assert resolve_affordance("carry") == "carry"
    with pytest.raises(InputError, match=r"unknown affordance 'gasp'\. Did you mean 'grasp'"):
        resolve_affordance("gasp")


def test_vocabulary_and_annotations_do_not_import_torch():
    code = ("import sys, engine.contact.vocabulary, annotations.vocabulary as a; "
            "assert 'torch' not in sys.modules; print(a.AFFORDANCES[7])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert result.stdout.strip() == "wrapgrasp"
