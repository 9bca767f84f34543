"""Prefect tasks of the retraining pipeline: thin, typed, paths / URIs / run ids in and out.

Each task sets its cache policy explicitly: pure steps are keyed on what determines their output
(the tokenization cache on data fingerprint, tokenizer hash and max_length); side effects (training,
logging, registration) are never cached. Retries wrap only I/O against the tracking server.
"""
