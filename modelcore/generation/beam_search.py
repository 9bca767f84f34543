"""Beam search, vectorized over (batch, beams) as transformers' ``_beam_search`` (same scores, same ties).

Per step: log-softmax the next-token logits, run the processors, add each beam's running score, and
keep the top ``max(2, 1 + #EOS) * num_beams`` continuations of each prompt. Continuations that meet a
stopping criterion (EOS, length, ...) become finished hypotheses, scored by
``log_prob / generated_length ** length_penalty``; the best unfinished ``num_beams`` continue. The
loop ends when no running beam can beat the finished ones (``early_stopping``), or nothing can continue.
"""

from __future__ import annotations

from typing import Any

import torch

from modelcore.generation.configuration import GenerationConfig
from modelcore.generation.logits_process import LogitsProcessorList
from modelcore.generation.stopping_criteria import StoppingCriteriaList

NEG = -1.0e9  # transformers' "impossible" score; kept identical so sums and ties match


def gather_beams(tensor: torch.Tensor, indices: torch.LongTensor) -> torch.Tensor:
    """(B, K, ...) picked along dim 1 by (B, k) -> (B, k, ...)."""
    while indices.ndim < tensor.ndim:
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def fill_value(config: GenerationConfig) -> int:
    """What fills the positions after a hypothesis ended (transformers' rule, quirks included)."""
    eos = config.eos_token_ids
    if not eos:
        return -1 if config.pad_token_id is None else config.pad_token_id
    return config.pad_token_id or eos[0]


def beam_search(
    model: Any,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    config: GenerationConfig,
    processors: LogitsProcessorList,
    criteria: StoppingCriteriaList,
    max_length: int,
) -> torch.LongTensor:
    """Run beam search from prompts already repeated ``num_beams`` times.

    Args:
        model: has ``generation_step(sequences, attention_mask, past)``.
        input_ids: (B * num_beams, T) each prompt repeated (consecutive rows).
        attention_mask: (B * num_beams, T).
        config: num_beams, num_return_sequences, length_penalty, early_stopping, do_sample, eos/pad ids.
        processors: applied to the log-probabilities.
        criteria: decide which continuations are finished.
        max_length: prompt plus new-token budget.

    Returns:
        (B * num_return_sequences, T + n) the best hypotheses of each prompt, best first.
    """
    from modelcore.generation.utils import reorder_past

    num_beams, device = config.num_beams, input_ids.device
    batch_size, prompt_len = input_ids.shape[0] // num_beams, input_ids.shape[1]
    beams_to_keep = max(2, 1 + len(config.eos_token_ids)) * num_beams
    top_num_beam_mask = torch.arange(beams_to_keep, device=device) < num_beams

    running = torch.full((batch_size, num_beams, max_length), fill_value(config), dtype=torch.long, device=device)
    running[:, :, :prompt_len] = input_ids.view(batch_size, num_beams, prompt_len)
    finished = running.clone()
    running_scores = torch.zeros((batch_size, num_beams), device=device)
    running_scores[:, 1:] = NEG  # the copies of a prompt must not all pick the same token
    finished_scores = torch.full((batch_size, num_beams), NEG, device=device)
    is_finished = torch.zeros((batch_size, num_beams), dtype=torch.bool, device=device)
    heuristic_unsatisfied = torch.ones((batch_size, 1), dtype=torch.bool, device=device)
    running_lengths = torch.zeros((batch_size, num_beams), dtype=torch.long, device=device)
    finished_lengths = running_lengths.clone()  # new tokens per hypothesis: to trim the output as transformers

    cur_len, past, flat = prompt_len, None, input_ids
    while True:
        logits, past = model.generation_step(flat, attention_mask, past)  # (B*nb, V)
        log_probs = processors(flat, torch.log_softmax(logits.float(), dim=-1))
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch_size, num_beams, vocab) + running_scores[:, :, None]).view(batch_size, -1)

        if config.do_sample:
            top_indices = torch.multinomial(log_probs.softmax(dim=-1), num_samples=beams_to_keep)
            top_log_probs = torch.gather(log_probs, 1, top_indices)
            top_log_probs, order = top_log_probs.sort(dim=-1, descending=True)
            top_indices = top_indices.gather(-1, order)
        else:
            top_log_probs, top_indices = torch.topk(log_probs, k=beams_to_keep)
        source_beam = top_indices // vocab  # (B, K)
        top_sequences = gather_beams(running, source_beam)
        top_sequences[:, :, cur_len] = top_indices % vocab
        top_lengths = gather_beams(running_lengths, source_beam) + 1
        hits = criteria(top_sequences[:, :, : cur_len + 1].reshape(-1, cur_len + 1), None).view(batch_size, -1)

        # the best num_beams continuations that did not finish keep running
        alive_scores = top_log_probs + hits.float() * NEG
        keep = torch.topk(alive_scores, k=num_beams)[1]
        running, running_scores = gather_beams(top_sequences, keep), gather_beams(alive_scores, keep)
        running_lengths = gather_beams(top_lengths, keep)
        rows = (gather_beams(source_beam, keep) + torch.arange(batch_size, device=device)[:, None] * num_beams).view(-1)

        finished, finished_scores, finished_lengths, is_finished = _merge_finished(
            (finished, finished_scores, finished_lengths, is_finished),
            (top_sequences, top_log_probs, top_lengths),
            hits & top_num_beam_mask[None, :],
            heuristic_unsatisfied,
            cur_len + 1 - prompt_len,
            config,
        )
        past = reorder_past(past, rows)
        attention_mask = torch.cat([attention_mask.index_select(0, rows), attention_mask.new_ones(len(rows), 1)], -1)
        cur_len += 1
        flat = running[:, :, :cur_len].reshape(batch_size * num_beams, cur_len)
        heuristic_unsatisfied = _improvement_possible(
            heuristic_unsatisfied,
            running_scores,
            finished_scores,
            is_finished,
            cur_len - prompt_len,
            max_length - prompt_len,
            config,
        )
        open_beams = not (bool(is_finished.all()) and config.early_stopping is True)
        if not (bool(heuristic_unsatisfied.any()) and open_beams and not bool(hits.all())):
            break

    n = config.num_return_sequences
    output_length = prompt_len + int(finished_lengths[:, :n].max())
    return finished[:, :n, :output_length].reshape(batch_size * n, output_length)


def _merge_finished(
    finished_state: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    candidates: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    just_finished: torch.Tensor,
    heuristic_unsatisfied: torch.Tensor,
    generated_length: int,
    config: GenerationConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``num_beams`` best of the finished hypotheses and the continuations that just finished."""
    sequences, scores, lengths, is_finished = finished_state
    top_sequences, top_log_probs, top_lengths = candidates
    candidate_scores = top_log_probs / (generated_length**config.length_penalty)
    batch_full = torch.all(is_finished, dim=-1, keepdim=True) & (config.early_stopping is True)
    candidate_scores = candidate_scores + batch_full.float() * NEG
    candidate_scores = candidate_scores + (~heuristic_unsatisfied).float() * NEG
    candidate_scores = candidate_scores + (~just_finished) * NEG
    merged_scores = torch.cat((scores, candidate_scores), dim=1)
    best = torch.topk(merged_scores, k=config.num_beams)[1]
    return (
        gather_beams(torch.cat((sequences, top_sequences), dim=1), best),
        gather_beams(merged_scores, best),
        gather_beams(torch.cat((lengths, top_lengths), dim=1), best),
        gather_beams(torch.cat((is_finished, just_finished), dim=1), best),
    )


def _improvement_possible(
    heuristic_unsatisfied: torch.Tensor,
    running_scores: torch.Tensor,
    finished_scores: torch.Tensor,
    is_finished: torch.Tensor,
    generated_length: int,
    max_new_tokens: int,
    config: GenerationConfig,
) -> torch.Tensor:
    """(B, 1): whether the best running beam could still beat the worst finished hypothesis."""
    if config.early_stopping == "never" and config.length_penalty > 0.0:
        best_length = max_new_tokens  # a positive penalty favours the longest hypothesis possible
    else:
        best_length = generated_length
    best_running = running_scores[:, :1] / (best_length**config.length_penalty)
    worst_finished = torch.where(is_finished, torch.min(finished_scores, dim=1, keepdim=True)[0], -1.0e9)
    return heuristic_unsatisfied & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
