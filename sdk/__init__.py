"""HeartSight: explainable 1D networks for ECG and PPG wearables."""

from sdk.errors import HeartSightError

__all__ = ["HeartSightError"]
