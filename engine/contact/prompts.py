"""Prompts and answers of InteractVLM in LLaVA v1's conversation template (REFERENCE.md section 1).

The human-contact question and answer are the released ones. The binary-contact, object-affordance
and joint questions are ours (the reference gives only the human template); they keep its shape so
that a model fine-tuned with ``python -m engine.contact.train`` sees the same kind of text.
"""
from __future__ import annotations

IMAGE_TOKEN = "<image>"
IMAGE_START, IMAGE_END = "<im_start>", "<im_end>"
USER, ASSISTANT = "USER", "ASSISTANT"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
HUMAN_QUESTION = "Which body parts are in contact with the {object}? Segment these contact areas."
BINARY_QUESTION = "Which body parts are in contact with objects or the ground? Segment these contact areas."
HUMAN_ANSWER = "The contacting body parts are {parts}, and the contact region is {token}."
NO_PARTS = "none"
OBJECT_QUESTION = "Which parts of the {object} afford {affordance}? Segment these affordance areas."
OBJECT_QUESTION_ANY = "Which parts of the {object} does the human touch? Segment these contact areas."
OBJECT_ANSWER = "The affordance region is {token}."
JOINT_QUESTION = ("Which body parts are in contact with the {object}, and where is the {object} touched? "
                  "Segment both contact areas.")
JOINT_ANSWER = "The contacting body parts are {parts}, the human contact region is {human} and the object contact region is {object}."


def conversation(question: str, answer: str | None = None, *, im_start_end: bool = True) -> str:
    """LLaVA v1 (``SeparatorStyle.TWO``): ``{system} USER: <image>\\n{q} ASSISTANT:`` [`` {answer}</s>``]."""
    image = f"{IMAGE_START}{IMAGE_TOKEN}{IMAGE_END}" if im_start_end else IMAGE_TOKEN
    text = f"{SYSTEM} {USER}: {image}\n{question} {ASSISTANT}:"
    return text if answer is None else f"{text} {answer}</s>"


def join_parts(parts) -> str:
    """``("left_hand", "hips")`` -> ``"left hand and hips"``; no part -> ``"none"``."""
    names = [part.replace("_", " ") for part in parts]
    if not names:
        return NO_PARTS
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def human_question(object_label: str | None) -> str:
    return BINARY_QUESTION if object_label is None else HUMAN_QUESTION.format(object=object_label)


def human_answer(parts, token: str = "[SEG]") -> str:
    return HUMAN_ANSWER.format(parts=join_parts(parts), token=token)


def object_question(object_label: str, affordance: str | None) -> str:
    if affordance is None:
        return OBJECT_QUESTION_ANY.format(object=object_label)
    return OBJECT_QUESTION.format(object=object_label, affordance=affordance)


def object_answer(token: str = "[SEG]") -> str:
    return OBJECT_ANSWER.format(token=token)


def joint_question(object_label: str) -> str:
    return JOINT_QUESTION.format(object=object_label)


def joint_answer(parts, human_token: str = "[HSEG]", object_token: str = "[OSEG]") -> str:
    return JOINT_ANSWER.format(parts=join_parts(parts), human=human_token, object=object_token)
