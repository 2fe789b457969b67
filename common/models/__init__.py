"""Models behind one protocol; :func:`build_model` imports torch or scikit-learn only when asked."""

from __future__ import annotations

from common.config import RunConfig
from common.errors import ConfigError
from common.models.base import (
    EvalResult,
    FitResult,
    LabelledArrays,
    Model,
    TrainingPlan,
    check_compatible,
    class_weights,
)

__all__ = [
    "EvalResult",
    "FitResult",
    "LabelledArrays",
    "Model",
    "TrainingPlan",
    "build_model",
    "check_compatible",
    "class_weights",
    "model_from_config",
]


def build_model(
    kind: str,
    *,
    image_size: int,
    seed: int = 0,
    widths: tuple[int, ...] = (16, 32, 64),
    num_features: int = 0,
    svm_alpha: float = 1e-4,
    rff_components: int = 512,
    rff_gamma: float = 0.0,
    cnn_norm: str = "none",
) -> Model:
    """Create a fresh model of ``kind`` (cnn, resnet18, svm, rff-svm) for ``image_size``-pixel records.

    Every site and the server build the same initial model from the same seed, so parameter shapes and
    values agree without any site sending its own first. ``num_features`` (SVMs) uses only the first
    values of each record (0 = all ``image_size**2``): tabular data is packed into square records.
    """
    if kind == "cnn":
        from common.models.cnn import CnnModel

        return CnnModel(widths=widths, seed=seed, norm=cnn_norm)
    if kind == "resnet18":
        from common.models.resnet import ResNet18Model

        return ResNet18Model(seed=seed)
    if kind in ("svm", "rff-svm"):
        from common.models.svm import LinearSvmModel

        return LinearSvmModel(
            num_features=num_features or image_size * image_size,
            alpha=svm_alpha,
            rff_components=rff_components if kind == "rff-svm" else 0,
            rff_gamma=rff_gamma,
            seed=seed,
        )
    raise ConfigError(f"Unknown model kind {kind!r}; choose cnn, resnet18, svm or rff-svm.")


def model_from_config(config: RunConfig) -> Model:
    """The run's initial model, exactly as every site and the server build it."""
    return build_model(
        config.model,
        image_size=config.image_size,
        seed=config.seed,
        widths=config.widths,
        num_features=config.num_features,
        svm_alpha=config.svm_alpha,
        rff_components=config.rff_components,
        rff_gamma=config.rff_gamma,
        cnn_norm=config.cnn_norm,
    )
