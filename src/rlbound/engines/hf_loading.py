"""Loading a causal LM and its tokenizer with transformers, for the "hf" engine.

Resolves what the user named (a model directory, a ``.gguf`` file, a directory holding one
``.gguf``, or a hub name), checks the device and dtype, and turns every load failure into one
:class:`~rlbound.errors.RlboundError` line. It does not download anything itself (hub names go to
``from_pretrained`` unchanged), shard models over devices, or quantise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rlbound.engines.base import check_engine_options
from rlbound.engines.precision import DTYPES as _DTYPES
from rlbound.errors import RlboundError

_OPTIONS = ("gguf_file", "revision", "attn_implementation")


def one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` puts its BOS token first when it adds special tokens."""
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos is not None and bool(probe) and probe[0] == bos


def prompt_token_ids(tokenizer: Any, text: str, adds_bos: bool, model_name: str) -> list[int]:
    """A prompt's ids with exactly one BOS where the tokenizer uses one (the hf and vllm engines'
    rule): the text is encoded without special tokens and the BOS prepended unless already there;
    an empty prompt becomes ``[BOS]``."""
    bos = tokenizer.bos_token_id
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if (adds_bos or not ids) and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    if not ids:
        raise RlboundError(f"empty prompt and the tokenizer of {model_name!r} has no BOS "
                           "token to start from")
    return ids


def render_chat(tokenizer: Any, user_message: str, model_name: str) -> str:
    """``user_message`` in the tokenizer's chat template, ready for the assistant's reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise RlboundError(f"the tokenizer of model {model_name!r} has no chat template; "
                           "choose another --template (e.g. plain)")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
    )


def looks_like_path(model: str) -> bool:
    """A string that cannot be a hub id ("name" or "org/name") is meant as a local path."""
    return (
        model.startswith(("/", ".", "~"))
        or model.endswith(".gguf")
        or "\\" in model
        or model.count("/") > 1
    )


def _resolve(model: str, gguf_file: str | None) -> tuple[str, str | None, bool]:
    """``(from_pretrained location, gguf file name or None, is local)`` for ``model``."""
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise RlboundError(f"model {model!r} is a file but not a .gguf file; give a model "
                               "directory, a .gguf file or a hub name")
        return str(path.parent), path.name, True
    if path.is_dir():
        if gguf_file is None and not (path / "config.json").exists():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            if len(ggufs) == 1:
                gguf_file = ggufs[0]
            elif ggufs:
                raise RlboundError(f"model directory {model!r} holds several .gguf files "
                                   f"({', '.join(ggufs)}); give the path of one")
        return str(path), gguf_file, True
    if looks_like_path(model):
        raise RlboundError(f"model {model!r} not found: no such file or directory")
    return model, gguf_file, False


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise RlboundError(f"device {device!r} is not a torch device ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RlboundError(f"device {device!r} requested but torch has no CUDA here; use --device cpu")
    return dev


def is_image_text_model(model: str, trust_remote_code: bool = False, **kw: Any) -> bool:
    """Whether ``model`` is an image-text model (a config with a ``vision_config`` that
    ``AutoModelForImageTextToText`` loads); False for GGUF files and for anything whose config
    cannot be read (the text path then reports why)."""
    try:
        location, gguf_file, _ = _resolve(str(model), kw.get("gguf_file"))
    except RlboundError:
        return False
    if gguf_file is not None:
        return False
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

        options = {"revision": kw["revision"]} if kw.get("revision") is not None else {}
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, **options)
    except Exception:  # noqa: BLE001 - not readable here: the text loader gives the error
        return False
    return getattr(config, "vision_config", None) is not None and (
        type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
        or "AutoModelForImageTextToText" in (getattr(config, "auto_map", None) or {}))


def load_model_and_tokenizer(
    model: str, device: str = "cpu", dtype: str = "auto", trust_remote_code: bool = False,
    image_text: bool = False, **kw: Any,
) -> tuple[Any, Any, str | None]:
    """``(model in eval mode on its device, tokenizer, gguf file name or None)`` for ``model``.

    ``dtype="auto"`` keeps the checkpoint's dtype, except that half precision is upcast to
    float32 on CPU; ``"float32"``, ``"bfloat16"``, ``"float16"`` force one. Further options:
    ``gguf_file`` (a .gguf inside a hub repo), ``revision``, ``attn_implementation``. With
    ``image_text`` the model is loaded as ``AutoModelForImageTextToText`` and its
    ``AutoProcessor`` is returned in the tokenizer's place (:mod:`rlbound.engines.hf_vision`).
    """
    check_engine_options("hf", kw, ("batch_size", "device", "dtype", "trust_remote_code", *_OPTIONS))
    if dtype != "auto" and dtype not in _DTYPES:
        raise RlboundError(f"dtype {dtype!r} is not one of auto, float32, bfloat16, float16")
    location, gguf_file, local = _resolve(str(model), kw.pop("gguf_file", None))
    dev = _pick_device(device)

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        common["gguf_file"] = gguf_file
    if kw.get("revision") is not None:
        common["revision"] = kw["revision"]
    model_kw: dict[str, Any] = dict(common)
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    model_kw[dtype_key] = "auto" if dtype == "auto" else _DTYPES[dtype]
    if kw.get("attn_implementation") is not None:
        model_kw["attn_implementation"] = kw["attn_implementation"]
    where = "" if local else " (not a local path, so it was looked up on the Hugging Face hub)"
    try:
        if image_text:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            tokenizer = AutoProcessor.from_pretrained(location, **common)
            lm = AutoModelForImageTextToText.from_pretrained(location, **model_kw)
        else:
            tokenizer = AutoTokenizer.from_pretrained(location, **common)
            lm = AutoModelForCausalLM.from_pretrained(location, **model_kw)
    except Exception as err:  # noqa: BLE001 - every load failure becomes one actionable line
        raise RlboundError(f"could not load model {model!r}{where}: {one_line(err)}") from err
    if dtype == "auto" and dev.type == "cpu" and lm.dtype in (torch.float16, torch.bfloat16):
        lm = lm.float()
    lm.to(dev).eval()
    return lm, tokenizer, gguf_file
