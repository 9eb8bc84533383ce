"""Character-level tokenizer of the built-in tiny models.

The vocabulary is fixed: three special tokens (``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2)
followed by newline and the 95 printable ASCII characters (space to ``~``), one token per
character, 99 tokens in all. ``encode`` maps text to ids (optionally with BOS/EOS), ``decode``
maps ids back (special tokens dropped), and the tokenizer round-trips through ``tokenizer.json``
in a model directory.

What it does not do: there is no UNK token. A character outside the vocabulary (a tab, a
non-ASCII letter) raises :class:`~rlbound.errors.RlboundError` naming the character and its
position, because a silent replacement would make log-probabilities of such text meaningless.
No merges, no normalisation, no chat template.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from rlbound.errors import RlboundError

TOKENIZER_FILE = "tokenizer.json"
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)
DEFAULT_CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
assert set(DEFAULT_CHARS) <= set(string.printable)


class CharTokenizer:
    """One token per character of ``chars``, after the special tokens PAD, BOS, EOS."""

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars):
            raise RlboundError("tokenizer characters must be distinct")
        self.chars = chars
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2
        self._offset = len(SPECIALS)
        self._to_id = {c: i + self._offset for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return self._offset + len(self.chars)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text`` (with BOS first / EOS last when asked)."""
        to_id = self._to_id
        try:
            ids = [to_id[c] for c in text]
        except KeyError:
            pos = next(i for i, c in enumerate(text) if c not in to_id)
            raise RlboundError(
                f"tiny tokenizer: character {text[pos]!r} at position {pos} is not in its "
                "vocabulary (newline and printable ASCII only)"
            ) from None
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids) -> str:
        """Text of ``ids``; special tokens are dropped."""
        off, chars = self._offset, self.chars
        return "".join(chars[i - off] for i in ids if i >= off)

    def token_text(self, token_id: int) -> str:
        """The text of one token ('' for special tokens)."""
        return self.chars[token_id - self._offset] if token_id >= self._offset else ""

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"type": "char", "specials": list(SPECIALS), "chars": self.chars}

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / TOKENIZER_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "CharTokenizer":
        path = Path(model_dir) / TOKENIZER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise RlboundError(
                f"tiny model directory '{model_dir}' has no {TOKENIZER_FILE}"
            ) from None
        except json.JSONDecodeError as err:
            raise RlboundError(f"tokenizer file '{path}' is not valid JSON: {err}") from None
        if data.get("type") != "char" or list(data.get("specials", [])) != list(SPECIALS):
            raise RlboundError(f"tokenizer file '{path}' is not a tiny character tokenizer")
        return cls(data["chars"])
