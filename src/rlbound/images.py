"""Problem images: where they come from, how prompts mark them, how engines open them.

A visual problem carries its images as :attr:`rlbound.tasks.base.Problem.images`: absolute file
paths or encoded image bytes. This module is the one place that

* turns what a task file holds into those sources (:func:`image_source`): a path relative to the
  file's folder, raw bytes, a ``{"bytes": ..., "path": ...}`` dict as Parquet files and Hugging
  Face ``datasets`` store images, or a ``data:image/...;base64,...`` URL;
* marks where each image goes in a prompt (:data:`IMAGE_MARK`, :func:`mark_images`): a question
  that names its images with the mark keeps them where it puts them, any other gets one mark per
  image before its text, so the mark lands inside the user turn of whatever template wraps it;
* turns the marks into the model's own image placeholder (:func:`image_placeholder`,
  :func:`expand_image_marks`), for the hf and vllm engines alike, so both see the same prompt;
* opens a source as an RGB PIL image (:func:`open_image`).

What it does not do: resize or otherwise preprocess images (the model's processor does that),
fetch images over the network, or handle video.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from rlbound.errors import RlboundError

IMAGE_MARK = "<image>"
"""Where an image goes in a problem's text and in the rendered prompt (engines replace it with
their model's placeholder)."""

def image_source(value: Any, base_dir: Path, where: str) -> str | bytes:
    """One image of a task-file record as a problem image (an absolute path, or bytes).

    ``where`` names the record for errors (``tasks file 'x.jsonl' line 3``).
    """
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return _as_bytes(data, where)
        if path:
            return image_source(str(path), base_dir, where)
        raise RlboundError(f"{where}: image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _as_bytes(value, where)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("data:"):
            head, _, payload = text.partition(",")
            if ";base64" not in head:
                raise RlboundError(f"{where}: image data URL is not base64 ({head[:40]}...)")
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise RlboundError(f"{where}: image data URL holds invalid base64") from None
        if not text:
            raise RlboundError(f"{where}: empty image path")
        path = Path(text).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise RlboundError(f"{where}: image file '{path}' not found (paths are relative to the "
                               "tasks file's folder)")
        return str(path.resolve())
    raise RlboundError(f"{where}: an image must be a path, bytes, a data URL or a dict with "
                       f"'bytes'/'path', got {type(value).__name__}")


def _as_bytes(data: Any, where: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):  # bytes written to JSON as base64 text
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RlboundError(f"{where}: image 'bytes' is text but not base64") from None
    raise RlboundError(f"{where}: image 'bytes' must be bytes, got {type(data).__name__}")


def record_images(value: Any, base_dir: Path, where: str) -> tuple[str | bytes, ...]:
    """A record's image field (one image, a list of them, or empty) as problem images."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(image_source(v, base_dir, where) for v in value if v is not None)
    return (image_source(value, base_dir, where),)


def open_image(source: str | bytes) -> Any:
    """An RGB ``PIL.Image`` of one problem image (one-line error if it cannot be read)."""
    try:
        from PIL import Image
    except ImportError:
        raise RlboundError("problem images need Pillow: pip install pillow") from None
    name = f"image file '{source}'" if isinstance(source, str) else f"image ({len(source)} bytes)"
    try:
        image = Image.open(source if isinstance(source, str) else io.BytesIO(source))
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise RlboundError(f"{name} cannot be read as an image ({exc})") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def mark_images(question: str, count: int) -> str:
    """``question`` with exactly ``count`` image marks: as it is when it already holds them (the
    images go where it says), else with one mark per image before the text."""
    held = question.count(IMAGE_MARK)
    if held == count:
        return question
    if held:
        raise RlboundError(f"a problem's text holds {held} {IMAGE_MARK} mark(s) but the problem "
                           f"has {count} image(s); mark every image or none")
    return IMAGE_MARK * count + "\n" + question


def expand_image_marks(prompt: str, count: int, placeholder: str) -> str:
    """``prompt`` with each image mark replaced by the model's ``placeholder``."""
    held = prompt.count(IMAGE_MARK)
    if held != count:
        raise RlboundError(f"the prompt holds {held} {IMAGE_MARK} mark(s) for {count} image(s) "
                           "(a template that drops the question drops its images too)")
    return prompt if placeholder == IMAGE_MARK else prompt.replace(IMAGE_MARK, placeholder)


def image_placeholder(processor: Any) -> str:
    """The text a model's prompt holds for one image, before its processor expands it.

    Read off the model's chat template, which knows the wrapping some models need (Qwen2-VL's
    ``<|vision_start|><|image_pad|><|vision_end|>``): a user turn with an image part is rendered
    beside the same turn without it, and the difference is the placeholder. Without a chat
    template, the processor's ``image_token`` (LLaVA's ``<image>``).
    """
    if getattr(processor, "chat_template", None):
        text = {"type": "text", "text": "\x1f"}
        try:
            plain, with_image = (processor.apply_chat_template(
                [{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True)
                for parts in ([text], [{"type": "image"}, text]))
        except Exception:  # noqa: BLE001 - a template that cannot render parts: use the token
            plain = with_image = ""
        start = 0
        while start < min(len(plain), len(with_image)) and plain[start] == with_image[start]:
            start += 1
        end = 0
        while end < len(plain) - start and plain[-1 - end] == with_image[-1 - end]:
            end += 1
        found = with_image[start:len(with_image) - end].strip("\n ")
        if found:
            return found
    token = getattr(processor, "image_token", None)
    if isinstance(token, str) and token:
        return token
    raise RlboundError("cannot tell how this model's prompts hold an image: its processor has no "
                       "chat template that renders an image part and no image_token")
