"""medlite.train: CNN builders, data sets, training, operating point and the model bundle (needs TensorFlow)."""

if __name__ != "medlite.train":
    raise ImportError(f"import medlite.train, not {__name__}")

__all__ = ["FAMILIES", "TrainConfig", "load_config", "train_bundle", "load_bundle"]


def __getattr__(name):
    # Lazy, so that `import medlite.train` alone does not start TensorFlow.
    if name == "FAMILIES":
        from .models import FAMILIES

        return FAMILIES
    if name in ("TrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "train_bundle":
        from .pipeline import train_bundle

        return train_bundle
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    raise AttributeError(name)
