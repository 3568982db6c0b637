"""The one place TensorFlow is imported, with Keras 2 (tf-keras) selected first.

tensorflow-model-optimization (QAT, pruning) works only with Keras 2 models,
so ``TF_USE_LEGACY_KERAS=1`` must be set before TensorFlow is first imported.
"""

import os

from ..edge.backends.litert import quiet, quiet_stderr

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the console
# TensorFlow's C++ code logs through absl, which writes everything to standard error until it is set up,
# whatever TF_CPP_MIN_LOG_LEVEL says: hence the import with standard error hidden.
try:
    with quiet_stderr(quiet()):
        import tensorflow as tf  # noqa: E402
        import tf_keras as keras  # noqa: E402
except ImportError as e:  # the cart install has no TensorFlow
    raise ImportError("medlite's training and conversion need TensorFlow: pip install 'medlite[train]'") from e

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras", "quiet", "quiet_stderr"]
