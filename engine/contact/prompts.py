"""Prompts and answers of InteractVLM in LLaVA v1's conversation template, as the release trains them.

The question and answer lists are the release's ``utils/utils.py`` ones (restated, not imported):
- human contact ("parts" question type): ``HUMAN_QUESTIONS`` and ``HUMAN_ANSWERS``, body parts joined with
  ", " (the release's ``', '.join``), the contact token in place of ``[HTOKEN]``;
- object affordance ("afford" question type): ``AFFORDANCE_QUESTIONS`` and ``AFFORDANCE_ANSWERS``, the
  token in place of ``[OTOKEN]``;
- the joint model is trained on SEPARATE human (``[HSEG]``) and object (``[OSEG]``) conversations with
  these same lists: there is no combined question.

Inference asks the first question of each list, as the release's demo does. Binary human contact (no
object label) asks about "all the objects or ground", the class name of the release's all-contact data.
Training draws a question and an answer from the lists (``pick``).
"""
from __future__ import annotations

IMAGE_TOKEN = "<image>"
IMAGE_START, IMAGE_END = "<im_start>", "<im_end>"
USER, ASSISTANT = "USER", "ASSISTANT"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
ANY_OBJECT = "all the objects or ground"

HUMAN_QUESTIONS = (
    "Which body parts are in contact with the {class_name}? Segment these contact areas.",
    "Name and segment the specific body parts making contact with the {class_name}.",
    "Looking at the {class_name}, what parts of the human body are touching it? Show these contact regions.",
    "For the {class_name}, list and mask the human body parts that are in contact.",
    "Regarding the {class_name}, identify which body parts are touching it and highlight these contact areas.",
)
HUMAN_ANSWERS = (
    "The contacting body parts are {body_parts}, and the contact region is {token}.",
    "The involved body parts are {body_parts}, with the contact mask at {token}.",
    "Contact occurs at {body_parts}, with the contact points shown at {token}.",
    "The body parts in contact are {body_parts}, with contact mask at {token}.",
    "Body parts: {body_parts}, contact mask: {token}.",
)
AFFORDANCE_QUESTIONS = (
    "What type of affordance does the human-object interaction suggest? Then, segment the area on the "
    "{class_name} where the human is making contact.",
    "Describe the affordance provided by the interaction, and identify the part of the {class_name} that the "
    "human is touching or interacting with in this scene.",
    "Explain the affordance type shown by the contact points on the {class_name} where the human is physically "
    "connected. Then show the segmentation mask.",
    "Specify the affordance implied by the human's contact with the {class_name}, then provide a segmentation "
    "mask of the contact area.",
    "Describe the affordance associated with the physical interaction on the {class_name}, and highlight the "
    "contact areas with a segmentation mask.",
)
AFFORDANCE_ANSWERS = (
    "The affordance type is {affordance}, and the contact region is {token}.",
    "This interaction suggests an affordance of {affordance}, and the object contact region is {token}.",
    "The contact points indicate an affordance of {affordance}, with the mask at {token}.",
    "This shows an affordance type of {affordance}, with contact at {token}.",
    "Affordance: {affordance}, contact mask: {token}.",
)


def conversation(question: str, answer: str | None = None, *, im_start_end: bool = True) -> str:
    """LLaVA v1 (``SeparatorStyle.TWO``): ``{system} USER: <image>\\n{q} ASSISTANT:`` [`` {answer}</s>``]."""
    image = f"{IMAGE_START}{IMAGE_TOKEN}{IMAGE_END}" if im_start_end else IMAGE_TOKEN
    text = f"{SYSTEM} {USER}: {image}\n{question} {ASSISTANT}:"
    return text if answer is None else f"{text} {answer}</s>"


def join_parts(parts) -> str:
    """``("left_hand", "hips")`` -> ``"left hand, hips"`` (the release's ``', '.join``); no part -> ``""``."""
    return ", ".join(part.replace("_", " ") for part in parts)


def human_question(object_label: str | None, index: int = 0) -> str:
    return HUMAN_QUESTIONS[index].format(class_name=ANY_OBJECT if object_label is None else object_label)


def human_answer(parts, token: str = "[SEG]", index: int = 0) -> str:
    return HUMAN_ANSWERS[index].format(body_parts=join_parts(parts), token=token)


def object_question(object_label: str, index: int = 0) -> str:
    return AFFORDANCE_QUESTIONS[index].format(class_name=object_label)


def object_answer(affordance: str, token: str = "[SEG]", index: int = 0) -> str:
    return AFFORDANCE_ANSWERS[index].format(affordance=affordance, token=token)


def pick(rng, count: int = len(HUMAN_QUESTIONS)) -> int:
    """A list index for training (the release draws questions and answers at random)."""
    return int(rng.integers(count))
