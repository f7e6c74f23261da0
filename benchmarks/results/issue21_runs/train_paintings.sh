#!/usr/bin/env bash
# The new `paintings`: the study's v2 recipe on all ten styles; rerun to resume after a kill.
set -u
. /work/main/.venv/bin/activate
r=""; [ -f /work/runs/final/paintings.run/checkpoint.pt ] && r="--resume"
atelier train styles --pairs /work/runs/set/pairs --held-out /work/runs/set/held --out /work/runs/final/paintings \
  --name paintings --steps 4000 --batch 8 --size 128 --perceptual-net effnet --perceptual-weight 10 --style-weight 10 \
  --l1-weight 30 --distill-weight 10 --perceptual-scales 2 --gan-loss hinge --d-scales 2 --d-base 32 \
  --base 32 --detail 2 --sample-every 500 --checkpoint-every 100 $r
