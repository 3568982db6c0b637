"""medlite.convert: quantization and TFLite export of a trained bundle, each variant validated (needs TensorFlow)."""

if __name__ != "medlite.convert":
    raise ImportError(f"import medlite.convert, not {__name__}")

__all__ = ["convert_bundle", "ConvertOptions"]


def __getattr__(name):
    # Lazy, so that `import medlite.convert` alone does not start TensorFlow.
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
