#!/usr/bin/env bash
# The issue-21 study: same pairs (3 styles), same 300 steps of 8 random 128 px crops, same seed.
set -u
. /work/main/.venv/bin/activate
common="--pairs /work/runs/study/pairs --held-out /work/runs/study/held --steps 300 --batch 8 --size 128 --perceptual-net effnet --perceptual-weight 10 --style-weight 10 --sample-every 0 -q"
recipe="--l1-weight 30 --distill-weight 10 --perceptual-scales 2 --gan-loss hinge --d-scales 2 --d-base 32"
run() { name=$1; shift; [ -f /work/runs/study/$name/config.json ] && return; r=""; [ -f /work/runs/study/$name.run/checkpoint.pt ] && r="--resume"; OMP_NUM_THREADS=1 nice -n -5 atelier train styles $common --out /work/runs/study/$name $r "$@" > /work/runs/study/$name.log 2>&1; }
run v0-old --l1-weight 100 --gan-loss none &
run v1-recipe $recipe &
wait
run v2-recipe-detail $recipe --base 32 --detail 2 &
run v3-detail-nogan $recipe --base 32 --detail 2 --gan-loss none &
wait
