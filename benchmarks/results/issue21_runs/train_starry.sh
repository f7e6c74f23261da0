#!/usr/bin/env bash
# The new `starry-tiny`: a plain `tiny` student of the Magenta teacher's Starry Night; rerun to resume after a kill.
set -u
. /work/main/.venv/bin/activate
r=""; [ -f /work/runs/final/starry-tiny.run/checkpoint.pt ] && r="--resume"
OMP_NUM_THREADS=1 atelier train student --pairs /work/runs/set/pairs/starry-night --out /work/runs/final/starry-tiny \
  --generator tiny --steps 1500 --batch 8 --size 128 --holdout 16 --perceptual-net effnet \
  --perceptual-weight 10 --l1-weight 30 --distill-weight 10 --perceptual-scales 2 --gan-loss hinge --d-scales 2 \
  --d-base 32 --sample-every 500 --checkpoint-every 100 $r
