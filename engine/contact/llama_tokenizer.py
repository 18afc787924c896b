"""The release's tokenizer: transformers 4.31's slow (SentencePiece) ``LlamaTokenizer``, restated.

The released folders ship ``tokenizer.model`` (SentencePiece), ``tokenizer_config.json``,
``special_tokens_map.json`` and ``added_tokens.json``; InteractVLM tokenised its training text with 4.31's
slow tokenizer. Current transformers only has a tokenizers-backed ``LlamaTokenizer`` whose handling of
added tokens and of the SentencePiece prefix differs, so the ids could differ from the ones the model was
trained on. This module restates 4.31's algorithm on the ``sentencepiece`` package directly:

1. The text is split on the added tokens (``[SEG]``, ``<im_start>``, ...) and on ``<s>``/``</s>``/``<unk>``,
   earliest and longest match first.
2. An added token given as a plain string (every token InteractVLM adds, ``special_tokens=True`` or not)
   strips the whitespace on both sides of its neighbours: ``"USER: <im_start>"`` -> ``"USER:"``,
   ``"<im_end>\\nWhich"`` -> ``"Which"``. ``<s>``, ``</s>`` and ``<unk>`` are ``AddedToken``s with
   ``lstrip=rstrip=False``: nothing is stripped next to them.
3. Each remaining chunk is encoded by SentencePiece on its own. ``legacy`` (``tokenizer_config.json``;
   4.31's default when the key is absent is legacy) keeps SentencePiece's dummy prefix on every chunk, so
   ``"[SEG]."`` gives ``[SEG]`` then ``"▁."``. Non-legacy (4.31's ``legacy=False``) prefixes the whole text
   with ``▁`` once and drops the dummy prefix of a chunk that follows an added token without a space.
4. ``__call__`` prepends ``<s>`` (``add_bos_token``, default True) and appends ``</s>`` only with
   ``add_eos_token``.

Only what the contact engine needs is provided: ``__call__``/``encode``, ``decode``, ``add_tokens``,
``convert_tokens_to_ids``, ``save_pretrained`` and the special token ids.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import sentencepiece

from engine.errors import InputError, MissingAssetError

SPIECE_UNDERLINE = "▁"
FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class Encoding:
    """``tokenizer(text).input_ids``, as transformers' BatchEncoding offers it."""

    input_ids: list[int]

    def __getitem__(self, key: str):
        if key != "input_ids":
            raise KeyError(key)
        return self.input_ids


def _token_text(value) -> str | None:
    """A special token as tokenizer_config/special_tokens_map store it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class ReleaseLlamaTokenizer:
    """4.31's slow LlamaTokenizer over a SentencePiece model (module docstring)."""

    def __init__(self, model_file: Path | str, *, added_tokens: dict[str, int] | None = None, legacy: bool = True,
                 add_bos_token: bool = True, add_eos_token: bool = False, bos_token: str = "<s>",
                 eos_token: str = "</s>", unk_token: str = "<unk>", pad_token: str | None = None,
                 model_max_length: int = 512):
        self.model_file = Path(model_file)
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(self.model_file))
        self.legacy, self.add_bos_token, self.add_eos_token = legacy, add_bos_token, add_eos_token
        self.bos_token, self.eos_token, self.unk_token = bos_token, eos_token, unk_token
        self.pad_token = pad_token
        self.model_max_length = model_max_length
        self.added_tokens: dict[str, int] = {}
        for token, index in sorted((added_tokens or {}).items(), key=lambda item: item[1]):
            if index != len(self):
                raise InputError(f"added_tokens.json gives {token!r} the id {index}, but the next free id is "
                                 f"{len(self)}; the file does not belong to this tokenizer.model")
            self.added_tokens[token] = index

    # ---- loading and saving --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: Path | str) -> "ReleaseLlamaTokenizer":
        folder = Path(folder)
        if not (folder / "tokenizer.model").is_file():
            raise MissingAssetError("Llama tokenizer", folder / "tokenizer.model",
                                    "the released folders ship it next to the weights")
        config = _read_json(folder / "tokenizer_config.json")
        special = _read_json(folder / "special_tokens_map.json")
        added = _read_json(folder / "added_tokens.json")
        pick = lambda key, default: _token_text(special.get(key, config.get(key, default)))
        legacy = config.get("legacy")
        return cls(folder / "tokenizer.model", added_tokens=added, legacy=True if legacy is None else bool(legacy),
                   add_bos_token=config.get("add_bos_token", True), add_eos_token=config.get("add_eos_token", False),
                   bos_token=pick("bos_token", "<s>"), eos_token=pick("eos_token", "</s>"),
                   unk_token=pick("unk_token", "<unk>"), pad_token=pick("pad_token", None),
                   model_max_length=config.get("model_max_length", 512))

    def save_pretrained(self, folder: Path | str) -> None:
        """The four files a 4.31 slow tokenizer writes."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.model_file.resolve() != (folder / "tokenizer.model").resolve():
            shutil.copyfile(self.model_file, folder / "tokenizer.model")
        added = lambda text: {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True,
                              "rstrip": False, "single_word": False}
        config = {"add_bos_token": self.add_bos_token, "add_eos_token": self.add_eos_token,
                  "bos_token": added(self.bos_token), "clean_up_tokenization_spaces": False,
                  "eos_token": added(self.eos_token), "legacy": self.legacy,
                  "model_max_length": self.model_max_length, "pad_token": None, "padding_side": "right",
                  "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer", "unk_token": added(self.unk_token)}
        special = {"bos_token": self.bos_token, "eos_token": self.eos_token, "unk_token": self.unk_token}
        if self.pad_token is not None:
            special["pad_token"] = self.pad_token
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
        (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
        (folder / "added_tokens.json").write_text(json.dumps(self.added_tokens, indent=2))

    # ---- vocabulary ----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.sp.get_piece_size() + len(self.added_tokens)

    def add_tokens(self, tokens, special_tokens: bool = False) -> int:
        """Append tokens the vocabulary lacks (4.31: a token that maps to <unk> is new); returns how many."""
        count = 0
        for token in [tokens] if isinstance(tokens, str) else tokens:
            if self.convert_tokens_to_ids(token) == self.unk_token_id and token != self.unk_token:
                self.added_tokens[token] = len(self)
                count += 1
        return count

    def convert_tokens_to_ids(self, token: str) -> int:
        if token in self.added_tokens:
            return self.added_tokens[token]
        return self.sp.piece_to_id(token)

    @property
    def bos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self.convert_tokens_to_ids(self.eos_token)

    @property
    def unk_token_id(self) -> int:
        return self.sp.piece_to_id(self.unk_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.convert_tokens_to_ids(self.pad_token)

    # ---- encoding ------------------------------------------------------------------------------------------
    def _no_split(self) -> list[str]:
        """Added tokens and the special ones, longest first so that the longest match wins at a position."""
        return sorted(set(self.added_tokens) | {self.bos_token, self.eos_token, self.unk_token}, key=len,
                      reverse=True)

    def _split(self, text: str) -> list[str]:
        """The text cut at every no-split token (earliest match, then longest), tokens kept as pieces."""
        tokens, pieces, start, cursor = self._no_split(), [], 0, 0
        while cursor < len(text):
            match = next((token for token in tokens if text.startswith(token, cursor)), None)
            if match is None:
                cursor += 1
                continue
            pieces += [text[start:cursor], match]
            cursor = start = cursor + len(match)
        pieces.append(text[start:])
        return pieces

    def tokenize(self, text: str) -> list[str]:
        if not self.legacy:
            text = SPIECE_UNDERLINE + text
        pieces = self._split(text)
        plain = set(self.added_tokens)  # strings, not AddedTokens: they strip their neighbours
        for index in range(1, len(pieces), 2):  # odd positions hold the no-split tokens
            if pieces[index] in plain:
                pieces[index - 1] = pieces[index - 1].rstrip()
                pieces[index + 1] = pieces[index + 1].lstrip()
        tokens = []
        for index, piece in enumerate(pieces):
            if index % 2:
                tokens.append(piece)
            elif piece:
                tokens += self._sentencepiece(piece)
        return tokens

    def _sentencepiece(self, text: str) -> list[str]:
        if self.legacy:
            return self.sp.encode(text, out_type=str)
        is_first = text.startswith(SPIECE_UNDERLINE)
        if is_first:
            text = text[1:]
        tokens = self.sp.encode(text, out_type=str)
        if not is_first and not text.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.convert_tokens_to_ids(token) for token in self.tokenize(text)]
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos_token else []) + ids
            ids += [self.eos_token_id] if self.add_eos_token else []
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> Encoding:
        return Encoding(self.encode(text, add_special_tokens))

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """SentencePiece runs decoded, added tokens kept as written, joined by spaces (4.31's default)."""
        special = {self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id}
        by_id = {index: token for token, index in self.added_tokens.items()}
        texts, run = [], []
        for index in (int(i) for i in ids):
            if skip_special_tokens and index in special:
                continue
            if index in by_id:
                texts += [self.sp.decode(run)] if run else []
                texts.append(by_id[index])
                run = []
            elif 0 <= index < self.sp.get_piece_size():
                run.append(index)
        texts += [self.sp.decode(run)] if run else []
        return " ".join(text for text in texts if text)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not JSON ({error})") from error
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data
