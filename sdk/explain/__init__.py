"""Attribution maps ("saliency traces") aligned with the input samples, one contract for every method."""

from sdk.explain.attribution import (
    Attribution,
    ClassActivationMap,
    GradCam,
    InputXGradient,
    IntegratedGradients,
)

__all__ = ["Attribution", "ClassActivationMap", "GradCam", "InputXGradient", "IntegratedGradients"]
