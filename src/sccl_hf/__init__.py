"""sccl-hf: train a small Chinese text-to-text chat model from scratch with Hugging Face libraries.

One module per stage (train_tokenizer, pretrain, sft, dpo_data, dpo, merge_lora; see stages.STAGES), over a small
library: configs (recipes), data (tables), model (presets, saving), training (resume, interrupt, logs),
seq2seq_dpo (encoder-decoder DPO on TRL 1.x), inference (answers, streaming), chat, serve, demo.
"""

__version__ = "0.1.0"
