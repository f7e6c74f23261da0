"""Stylisation methods: optimize.py (gatys, effnet and lite: one engine for any feature net) and feedforward.py (trained
student generators: one forward pass, optionally in blended tiles)."""
