"""Stylisation methods: optimize.py (gatys and, later, lite: one engine for any feature net)."""
