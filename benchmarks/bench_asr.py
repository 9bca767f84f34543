"""Speech recognition: word error rate and wall time of modelcore's Whisper against transformers'.

Both libraries load the same folder, whisper-tiny.en converted from the CTranslate2 asset
(``python -m modelcore.models.whisper.convert_ctranslate2``), and transcribe the same real clips: Debian's
Asterisk prompts (8 kHz, resampled once to 16 kHz by modelcore's resampler before timing, since transformers'
feature extractor takes 16 kHz only), with their published transcripts as references. Each library runs its own
feature extractor, greedy ``generate`` (no timestamps) and decoding, one clip at a time (batch 1) and in
batches of 8, on 2 threads. Times are the best of ``--repeats`` passes over all clips, after one warm-up clip.

WER = word-level edit distance / reference words, over all clips, after normalising both texts: lower case,
punctuation dropped, digits spelled out (the prompts write "Dial 1", Whisper says "Dial one"), and stage
directions in parentheses or brackets ("(simple tone sound plays)") dropped from the references.

    python -m benchmarks.bench_asr [--clips 24] [--repeats 3] [--json]

``--ctranslate2`` (needs ``pip install ctranslate2``, which modelcore itself never imports) checks the
conversion by a second route instead: CTranslate2's own converter turns our converted folder back into a
``model.bin``, compared variable by variable with the asset's; and CTranslate2's engine transcribes the clips
from the original asset, compared token by token with modelcore on the converted folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from collections.abc import Callable

import numpy as np
import torch

from modelcore.feature_extraction import resample

logger = logging.getLogger("benchmarks.bench_asr")
THREADS = 2
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelled out one by one, stage directions ("(tone)") dropped."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text)
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower().replace("-", " "))
    return re.sub(r"[^a-z' ]+", " ", text).replace(" '", " ").split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions and deletions cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Total edits over total reference words, after :func:`normalise`."""
    edits = sum(edit_distance(normalise(r), normalise(h)) for r, h in zip(references, hypotheses, strict=True))
    return edits / sum(len(normalise(r)) for r in references)


def modelcore_transcriber(folder: str) -> Callable[[list[np.ndarray]], list[str]]:
    from modelcore.models.whisper.modeling_whisper import WhisperForConditionalGeneration
    from modelcore.models.whisper.processing_whisper import WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)

    def transcribe(batch: list[np.ndarray]) -> list[str]:
        features = processor(batch, sampling_rate=16000)["input_features"]
        return [t.strip() for t in processor.batch_decode(model.generate(features), skip_special_tokens=True)]

    return transcribe


def transformers_transcriber(folder: str) -> Callable[[list[np.ndarray]], list[str]]:
    import transformers

    model = transformers.WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = transformers.WhisperProcessor.from_pretrained(folder)

    def transcribe(batch: list[np.ndarray]) -> list[str]:
        features = processor(batch, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            tokens = model.generate(features)
        return [t.strip() for t in processor.batch_decode(tokens, skip_special_tokens=True)]

    return transcribe


def check_against_ctranslate2(folder: str, clips: list, audio: list[np.ndarray]) -> dict:
    """Round-trip the converted folder through CTranslate2's converter and compare its engine's tokens with ours."""
    import tempfile

    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    from modelcore import assets
    from modelcore.models.whisper.convert_ctranslate2 import read_ctranslate2_model
    from modelcore.models.whisper.modeling_whisper import WhisperForConditionalGeneration
    from modelcore.models.whisper.processing_whisper import WhisperProcessor

    asset = assets.fetch("whisper-tiny-en")
    with tempfile.TemporaryDirectory() as out:
        TransformersConverter(folder).convert(out, quantization="float16", force=True)
        back = read_ctranslate2_model(f"{out}/model.bin").variables
    original = read_ctranslate2_model(asset / "model.bin").variables
    differing = [n for n in original if n not in back or not np.array_equal(original[n], back[n])]
    only_new = sorted(set(back) - set(original))  # scalars a newer CTranslate2 writes (alibi flags)

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    processor = WhisperProcessor.from_pretrained(folder)
    engine = ctranslate2.models.Whisper(str(asset), device="cpu", intra_threads=THREADS)
    suppress = json.loads((asset / "config.json").read_text())["suppress_ids"]
    same = 0
    for clip, samples in zip(clips, audio, strict=True):
        features = processor(samples, sampling_rate=16000)["input_features"]
        ours = model.generate(features)[0].tolist()
        prompt = [[model.config.decoder_start_token_id, *[t for _, t in model.config.forced_decoder_ids]]]
        storage = ctranslate2.StorageView.from_array(features.numpy())
        result = engine.generate(storage, prompt, beam_size=1, max_length=448, suppress_tokens=suppress)
        if ours == result[0].sequences_ids[0]:
            same += 1
        else:
            logger.info("%s: ours %s, CTranslate2 %s", clip.name, ours, result[0].sequences_ids[0])
    return {
        "variables": len(original),
        "differing_variables": differing,
        "variables_only_in_round_trip": only_new,
        "same_tokens": f"{same}/{len(clips)}",
    }


def timed_pass(transcribe: Callable, audio: list[np.ndarray], batch_size: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts: list[str] = []
    for i in range(0, len(audio), batch_size):
        texts += transcribe(audio[i : i + batch_size])
    return time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    parser.add_argument("--ctranslate2", action="store_true", help="check the conversion against CTranslate2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("modelcore.feature_extraction").setLevel(logging.ERROR)
    torch.set_num_threads(THREADS)

    from tests.modelcore.models import whisper_assets

    folder = str(whisper_assets.converted_whisper_dir())
    clips = whisper_assets.benchmark_clips(args.clips)
    audio = [resample(c.audio, c.sampling_rate, 16000) for c in clips]
    references = [c.text for c in clips]
    seconds = sum(len(a) for a in audio) / 16000
    logger.info("%d clips, %.1f s of speech, %d threads", len(clips), seconds, THREADS)

    if args.ctranslate2:
        logger.info("CTranslate2 check: %s", check_against_ctranslate2(folder, clips, audio))
        return
    libraries = {"modelcore": modelcore_transcriber(folder), "transformers": transformers_transcriber(folder)}
    for transcribe in libraries.values():
        transcribe(audio[:1])  # warm-up
    results: dict[str, dict] = {name: {} for name in libraries}
    for batch_size in args.batch_sizes:
        times: dict[str, list[float]] = {name: [] for name in libraries}
        for _ in range(args.repeats):  # the libraries take turns, so both see the same load on a shared machine
            for name, transcribe in libraries.items():
                elapsed, texts = timed_pass(transcribe, audio, batch_size)
                times[name].append(elapsed)
                results[name][f"batch{batch_size}_texts"] = texts
        for name in libraries:
            results[name][f"batch{batch_size}_s"] = round(min(times[name]), 2)
            results[name][f"batch{batch_size}_wer"] = round(
                word_error_rate(references, results[name][f"batch{batch_size}_texts"]), 4
            )
            logger.info("batch %d, %s: %s s", batch_size, name, [round(t, 2) for t in times[name]])
    same = all(
        results["modelcore"][k] == results["transformers"][k] for k in results["modelcore"] if k.endswith("texts")
    )
    summary = {"clips": len(clips), "speech_s": round(seconds, 1), "same_texts": same, **results}
    for name in libraries:
        for key in [k for k in results[name] if k.endswith("texts")]:
            results[name].pop(key)
    if args.json:
        print(json.dumps(summary))
        return
    logger.info("same transcripts in both libraries: %s", same)
    for batch_size in args.batch_sizes:
        ours, theirs = results["modelcore"][f"batch{batch_size}_s"], results["transformers"][f"batch{batch_size}_s"]
        logger.info(
            "batch %d: modelcore %.2f s (WER %.3f), transformers %.2f s (WER %.3f): %.2fx",
            batch_size,
            ours,
            results["modelcore"][f"batch{batch_size}_wer"],
            theirs,
            results["transformers"][f"batch{batch_size}_wer"],
            theirs / ours,
        )


if __name__ == "__main__":
    main()
