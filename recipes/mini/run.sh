#!/usr/bin/env bash
# The mini chain: real Chinese data to a chat model, its evaluation and a report card, in under 90 minutes on 2 CPU
# cores (dev/LOG.md has the measured split). From the checkout's root, with the shared data at ../shared/data:
#   make mini                     (or: bash recipes/mini/run.sh, with the project's `sccl` on PATH)
# Each line is an ordinary `sccl run`: rerun any of them by hand. Everything is written under runs/mini/.
# To go on from one step, the earlier steps' outputs kept:  bash recipes/mini/run.sh recipes/mini/dpo.yaml
set -euo pipefail
started=$(date +%s)
from="${1:-}"
if [ -n "$from" ] && ! grep -q "^step run $from " "$0"; then
    echo "run.sh: no step runs '$from'; the steps are:" >&2
    grep -o "^step run [^ ]*" "$0" | cut -d" " -f3 >&2
    exit 2
fi
step() {
    if [ -n "$from" ] && [ "${2:-}" != "$from" ]; then
        echo "== skipped (before $from): sccl $*"
        return
    fi
    from=""
    echo "== [$(( $(date +%s) - started )) s] sccl $*"
    sccl "$@"
}
step run recipes/mini/data_pretrain.yaml       # general text: ChatLM sample, wiki, medical CSV (GB18030), couplets, poetry
step run recipes/mini/data_sft.yaml            # instructions: the SFT mix, raw Alpaca JSON, ShareGPT (BELLE eval left out)
step run recipes/mini/data_dpo.yaml            # real preference pairs, 100 held out
step run recipes/mini/ie_data.yaml             # DuIE training sentences with the seed's instruction, 500 held out
step run recipes/mini/ie_dev.yaml              # the whole DuIE dev set
step run recipes/mini/tokenizer.yaml           # char-level BPE, 8,000 tokens
step run recipes/mini/pretrain.yaml            # `small` (9.4M): 2,500 steps of general text, half span corruption
step run recipes/mini/eval_ppl_pretrain.yaml   # held-out general text
step run recipes/mini/sft.yaml                 # 1,200 steps on the instructions
step run recipes/mini/eval_ppl_sft.yaml        # held-out instructions
step run recipes/mini/eval_gen_sft.yaml        # BELLE eval set: BLEU/ROUGE, sample answers
step run recipes/mini/dpo_data.yaml            # the SFT model's own answers as rejected ones
step run recipes/mini/dpo.yaml                 # DPO + SFT term; reward accuracy on the held-out pairs
step run recipes/mini/eval_ppl_dpo.yaml        # the SFT model's figures again, after DPO
step run recipes/mini/eval_gen_dpo.yaml
step run recipes/mini/ceval.yaml               # C-Eval val, zero-shot (chance: 25%)
step run recipes/mini/ie_sft_scratch.yaml      # triple extraction from random initialisation ...
step run recipes/mini/ie_eval_scratch.yaml
step run recipes/mini/ie_sft_pretrained.yaml   # ... and from the mini pretrained model, same budget (400 steps)
step run recipes/mini/ie_eval_pretrained.yaml  # P/R/F1 and the F1 difference with its bootstrap interval
step report runs/mini                          # runs/mini/report.md and report.html
echo "mini chain: done in $(( $(date +%s) - started )) s"
# Beside the chain, after it (issue 32's comparison with DPO, ~45 more minutes): SimPO of the SFT model on DPO's pairs,
# and ORPO from the pretrained model (no SFT stage); neither keeps a reference model.
#   sccl run recipes/mini/simpo.yaml && sccl run recipes/mini/eval_ppl_simpo.yaml
#   sccl run recipes/mini/orpo.yaml && sccl run recipes/mini/eval_ppl_orpo.yaml
