"""Lightning callbacks for lightopt, one per module."""

from lightopt.callbacks.coordinate_descent import CoordinateDescent
from lightopt.callbacks.curriculum import Continuation, CurriculumSampler, StochasticCurriculum
from lightopt.callbacks.curvature_monitor import CurvatureMonitor
from lightopt.callbacks.early_stopping import EarlyStopping
from lightopt.callbacks.gradient_clipping import GradientClipping
from lightopt.callbacks.gradient_monitor import GradientMonitor
from lightopt.callbacks.initialization import Initialization
from lightopt.callbacks.polyak_averaging import PolyakAveraging

__all__ = [
    "Continuation",
    "CoordinateDescent",
    "CurvatureMonitor",
    "CurriculumSampler",
    "EarlyStopping",
    "GradientClipping",
    "GradientMonitor",
    "Initialization",
    "PolyakAveraging",
    "StochasticCurriculum",
]
