#!/usr/bin/env bash
# Train a stand-in for "your" model, save its state dict, then compress it with edgekd.
set -euo pipefail
cd "$(dirname "$0")"
python train_my_teacher.py            # writes my_teacher.pt (a state dict)
edgekd compress --teacher my_teacher.py:build --weights my_teacher.pt \
    --data digits --budget-ms 0.5 --max-size-kb 128 --out byo-out --force
