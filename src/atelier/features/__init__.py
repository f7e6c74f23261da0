"""Feature networks: see base.py for the contract."""
from .base import FeatureNet

__all__ = ["FeatureNet"]
