"""A word-level tokenizer over the studio's own prompt vocabulary, for tiny models only.

Released InteractVLM folders ship the Llama tokenizer and it is always used for them. A ``tiny-*``
model trained from scratch on CPU (tests, ``python -m engine.contact.train --preset tiny``) has no
Llama tokenizer to start from, so it gets this one: every word of our prompts and answers, the body
part names, the object labels and the affordances, with Llama's ``<unk>``/``<s>``/``</s>`` ids 0/1/2.
"""
from __future__ import annotations

import re

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from engine.body.parts import DEFAULT_PART_NAMES
from engine.contact import prompts
from engine.contact.vocabulary import AFFORDANCES, OBJECT_LABELS

SPECIAL = ("<unk>", "<s>", "</s>")
_WORD = re.compile(r"\w+|[^\w\s]")


def _template_words() -> set[str]:
    texts = [value for name, value in vars(prompts).items() if name.isupper() and isinstance(value, str)]
    texts += [item for name, value in vars(prompts).items() if name.isupper() and isinstance(value, tuple)
              for item in value]
    texts += [f"{prompts.USER}: {prompts.ASSISTANT}:"] + list(OBJECT_LABELS) + list(AFFORDANCES) + [part.replace("_", " ") for part in DEFAULT_PART_NAMES]
    words = set()
    for text in texts:
        words.update(_WORD.findall(re.sub(r"\{\w+\}|\[\w+\]|<\w+>", " ", text)))
    return words


def word_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny models' tokenizer (deterministic: words sorted after the three special tokens)."""
    vocabulary = {token: index for index, token in enumerate(SPECIAL)}
    for word in sorted(_template_words()):
        vocabulary.setdefault(word, len(vocabulary))
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
