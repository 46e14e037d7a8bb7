"""Replay the breaks that show the tests can fail: each one edits one line of the library the way a real bug
would, runs the tests that name that behaviour, expects them to fail, and puts the line back.

    .venv/bin/python dev/break_checks.py            # every break (about 2 minutes on 2 cores)
    .venv/bin/python dev/break_checks.py triples    # the breaks whose name contains "triples"

A break whose tests still pass is printed as NOT CAUGHT and the script exits with 1: the tests named beside it
no longer pin that behaviour down. The working tree is restored after each break, even on Ctrl+C.
"""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Break:
    name: str
    path: str  # in the checkout
    before: str  # the exact text, found once
    after: str
    tests: list[str]  # pytest node ids or "-k" expressions: every one is expected to fail


BREAKS = [
    Break(
        "batching: rows reordered when a request leaves",
        "src/sccl_hf/batching.py",
        "self.active = [self.active[i] for i in keep]",
        "self.active = [self.active[i] for i in keep][::-1]",
        ["tests/test_batching.py::test_greedy_answers_equal_each_request_alone_as_requests_join_and_leave"],
    ),
    Break(
        "batching: a request's repetition_penalty ignored",
        "src/sccl_hf/batching.py",
        'if settings.get("repetition_penalty", 1.0) != 1.0:',
        "if False:",
        [
            "tests/test_batching.py::test_each_rows_scores_equal_transformers_processors",
            "tests/test_batching.py::test_different_settings_in_one_shared_batch_each_equal_transformers_alone",
        ],
    ),
    Break(
        "batching: a sampling request draws from the shared generator",
        "src/sccl_hf/batching.py",
        'generator=request.settings.get("generator")',
        "generator=None",
        ["tests/test_batching.py::test_sampled_requests_in_one_shared_batch_equal_their_seeded_draws_alone"],
    ),
    Break(
        "streaming: a byte-fallback run handed over before it is complete",
        "src/sccl_hf/engine.py",
        "if token_id in self.byte_ids:",
        "if False:",
        ["tests/test_batching.py::test_streamed_pieces_never_change_even_when_a_byte_run_turns_out_invalid"],
    ),
    Break(
        "scoring: [EOS] not scored",
        "src/sccl_hf/scoring.py",
        'labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)',
        'labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)'
        ".masked_fill(targets['input_ids'] == tokenizer.eos_token_id, -100)",
        ["tests/test_scoring.py", "tests/test_eval.py::test_perplexity_equals_a_hand_computation"],
    ),
    Break(
        "DPO forward: [EOS] not scored",
        "src/sccl_hf/seq2seq_dpo.py",
        "completion = [torch.tensor([0] + [1] * len(t)) for t in targets]",
        "completion = [torch.tensor([0] + [1] * (len(t) - 1) + [0]) for t in targets]",
        ["tests/test_faults.py::test_14_dpo_log_probs_and_loss_equal_an_independent_computation"],
    ),
    Break(
        "triples: a triple split at its last commas",
        "src/sccl_hf/triples.py",
        'parts = piece.split(",", 2)',
        'parts = piece.rsplit(",", 2)',
        ["tests/test_eval.py::test_triples_parse_well_formed_truncated_and_garbage_output"],
    ),
    Break(
        "stream windows: every third window skipped",
        "src/sccl_hf/tables.py",
        "        rng = random.Random(seed * 1_000_003 + indices[0])\n",
        "        rng = random.Random(seed * 1_000_003 + indices[0])\n"
        "        if (indices[0] // max(len(indices), 1)) % 3 == 1:\n"
        "            return {key: [] for key in batch}\n",
        [
            "tests/test_data.py::test_a_stream_grouped_by_length_keeps_every_row_and_pads_less",
            "tests/test_data.py::test_a_token_budget_cuts_batches_of_varying_rows_under_it",
        ],
    ),
    Break(
        "contrastive search: the degeneration penalty against the mean, not the most similar, earlier token",
        "modeling_chat_model.py",
        "score = (1 - penalty_alpha) * top_probs - penalty_alpha * similarity.max(dim=-1).values",
        "score = (1 - penalty_alpha) * top_probs - penalty_alpha * similarity.mean(dim=-1)",
        ["tests/test_model.py::test_contrastive_search_with_a_penalty_equals_a_brute_force_computation"],
    ),
    Break(
        "training: the starting-loss check never fires",
        "src/sccl_hf/training.py",
        "if math.isfinite(loss) and loss > limit:",
        "if math.isfinite(loss) and loss > limit + 1e9:",
        ["tests/test_training.py::test_a_run_with_a_mismatched_tokenizer_warns_at_its_first_logged_step"],
    ),
    Break(
        "stream windows: every window shuffled in the same order (the seed without the window's position)",
        "src/sccl_hf/tables.py",
        "rng = random.Random(seed * 1_000_003 + indices[0])",
        "rng = random.Random(seed * 1_000_003)",
        ["tests/test_data.py::test_each_window_of_a_stream_is_shuffled_in_its_own_order"],
    ),
    Break(
        'serving: lax JSON types (`"max_tokens": true` taken as 1)',
        "src/sccl_hf/apps/serve.py",
        "model_config = ConfigDict(strict=True)",
        "model_config = ConfigDict(strict=False)",
        ["tests/test_serve_faults.py::test_17_bad_fields_are_400s_in_openais_error_shape"],
    ),
    Break(
        "serving: UTF-16 and UTF-32 bodies decoded",
        "src/sccl_hf/apps/serve.py",
        'json.detect_encoding(start) != "utf-8"',
        'json.detect_encoding(start) == "never"',
        ["tests/test_serve_faults.py::test_17_a_body_not_in_utf8_is_a_400_in_openais_error_shape"],
    ),
    Break(
        "serving: FastAPI's own body limit answers a declared length (in plain text)",
        "src/sccl_hf/apps/serve.py",
        "        openapi_url=None,\n    )",
        "        openapi_url=None,\n        max_body_size=MAX_BODY_BYTES,\n    )",
        ["tests/test_serve_faults.py::test_15_a_body_declared_too_large_gets_a_json_413_before_it_is_sent"],
    ),
    Break(
        "adafactor_t5: absolute steps (the parameter scaling left out)",
        "src/sccl_hf/optim.py",
        '"scale_parameter": True',
        '"scale_parameter": False',
        ["tests/test_optim.py::test_two_updates_equal_a_hand_computation_and_ignore_the_learning_rate"],
    ),
    Break(
        "adafactor_t5: the schedule reports the recipe's rate instead of the relative step",
        "src/sccl_hf/training.py",
        "if self.lr_scheduler is None and self.args.optim == ADAFACTOR_T5:",
        "if False:",
        ["tests/test_optim.py::test_a_run_with_adafactor_t5_logs_its_step_and_resumes_with_its_state"],
    ),
    Break(
        "cleaning: code loses its indentation",
        "src/sccl_hf/cleaning.py",
        "part if is_code else _tidy_prose(part)",
        "_tidy_prose(part)",
        [
            "tests/test_data_stage.py::test_code_keeps_its_text_and_the_prose_around_it_is_cleaned",
            "tests/test_data_stage.py::test_code_in_the_shared_alpaca_rows_is_kept_byte_for_byte",
        ],
    ),
    Break(
        "span corruption: every span gets the same sentinel",
        "src/sccl_hf/span_corruption.py",
        "            span += 1\n",
        "            span += 0\n",
        ["tests/test_span_corruption.py::test_inputs_and_targets_merge_back_into_the_original_tokens"],
    ),
    Break(
        "span corruption: masks drawn afresh, not seeded by the row",
        "src/sccl_hf/span_corruption.py",
        "return random.Random((zlib.crc32(",
        "return random.Random() or ((zlib.crc32(",
        [
            "tests/test_span_corruption.py::test_the_masks_depend_on_the_row_and_the_seed_not_on_its_batch",
            "tests/test_span_corruption.py::test_a_resumed_span_corruption_stream_sees_the_same_masks",
        ],
    ),
    Break(
        "span corruption: T5's layout (no empty kept run at the row's start)",
        "src/sccl_hf/span_corruption.py",
        "lengths[0] -= 1",
        "lengths[-1] -= 1",
        ["tests/test_span_corruption.py::test_a_short_rows_span_falls_anywhere_not_only_at_its_end"],
    ),
    Break(
        "sentinels: the torch batcher does not suppress them",
        "src/sccl_hf/batching.py",
        "if self.suppressed:",
        "if False:",
        ["tests/test_span_corruption.py::test_no_engine_generates_a_sentinel"],
    ),
    Break(
        "sentinels: CTranslate2 does not suppress them",
        "src/sccl_hf/ct2.py",
        "if self.suppressed:",
        "if False:",
        ["tests/test_span_corruption.py::test_no_engine_generates_a_sentinel"],
    ),
    Break(
        "sentinels: my_generate's contrastive search does not suppress them",
        "modeling_chat_model.py",
        'logits[:, suppressed] = -float("inf")',
        "pass",
        ["tests/test_span_corruption.py::test_no_engine_generates_a_sentinel"],
    ),
    Break(
        "preference: prompts passed whole to the encoder (TRL's encoder-decoder path)",
        "src/sccl_hf/seq2seq_preference.py",
        "        if self.is_encoder_decoder:\n",
        "        if False:\n",
        [
            "tests/test_preference.py::test_the_batch_decoder_inputs_start_with_pad_labels_end_in_eos_and_prompts_are_cut"
        ],
    ),
    Break(
        "preference: SimPO with CPO's NLL term by default",
        "src/sccl_hf/seq2seq_preference.py",
        'self.cpo_alpha = 0.0 if self.loss == "simpo" else 1.0',
        "self.cpo_alpha = 1.0",
        ["tests/test_preference.py::test_simpo_loss_is_the_length_normalised_margin_minus_gamma"],
    ),
    Break(
        "preference: simpo mapped to CPO's sigmoid loss",
        "src/sccl_hf/seq2seq_preference.py",
        '"simpo": ("cpo", "simpo"),',
        '"simpo": ("cpo", "sigmoid"),',
        ["tests/test_preference.py::test_simpo_loss_is_the_length_normalised_margin_minus_gamma"],
    ),
    Break(
        "preference: the relative-step optimizer not built (TRL's trainer without the mixin)",
        "src/sccl_hf/seq2seq_preference.py",
        "class Seq2SeqPreferenceTrainer(Seq2SeqPreferenceMixin, RelativeStepMixin, base):",
        "class Seq2SeqPreferenceTrainer(Seq2SeqPreferenceMixin, base):",
        [
            "tests/test_preference.py::test_ctrl_c_saves_a_checkpoint_and_the_run_resumes_with_the_relative_step_optimizer"
        ],
    ),
    Break(
        "text files: a one-line block kept as a document with an empty body",
        "src/sccl_hf/tables.py",
        'if document["text"].strip():',
        "if True:",
        ["tests/test_span_corruption.py::test_a_text_file_gives_its_documents_cut_into_pieces_that_merge_back"],
    ),
    Break(
        "model card: the evaluations left out of the Hub's model-index",
        "src/sccl_hf/publish.py",
        "eval_results=eval_results(found) or None,",
        "eval_results=None,",
        ["tests/test_publish.py::test_the_card_shows_the_figures_of_the_results_files"],
    ),
]


def test_fails(test: str) -> bool:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return result.returncode != 0


def main(selection: str = "") -> int:
    missed = 0
    for item in [b for b in BREAKS if selection in b.name]:
        path = ROOT / item.path
        original = path.read_text(encoding="utf-8")
        if original.count(item.before) != 1:
            print(f"STALE    {item.name}: the line to break is not in {item.path} once; update BREAKS")
            missed += 1
            continue
        try:
            path.write_text(original.replace(item.before, item.after), encoding="utf-8")
            passed = [t for t in item.tests if not test_fails(t)]
        finally:
            path.write_text(original, encoding="utf-8")
        missed += bool(passed)
        verdict = f"NOT CAUGHT by {', '.join(passed)}" if passed else f"caught by {', '.join(item.tests)}"
        print(f"{'MISSED ' if passed else 'ok     '} {item.name}: {verdict}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
