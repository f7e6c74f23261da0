#!/usr/bin/env bash
# The new `paintings-steady`: the new `paintings` fine-tuned with the stability term (weight 100, as the old one);
# rerun to resume after a kill.
set -u
. /work/main/.venv/bin/activate
r=""; [ -f /work/runs/final/steady300.run/checkpoint.pt ] && r="--resume"
atelier train styles --pairs /work/runs/set/pairs --held-out /work/runs/set/held --out /work/runs/final/steady300 \
  --name paintings-steady --init /work/runs/final/paintings --stability-weight 300 --learning-rate 0.0003 \
  --steps 1000 --batch 8 --size 128 --perceptual-net effnet --perceptual-weight 10 --style-weight 10 \
  --l1-weight 30 --distill-weight 10 --perceptual-scales 2 --gan-loss hinge --d-scales 2 --d-base 32 \
  --base 32 --detail 2 --sample-every 500 --checkpoint-every 100 $r
