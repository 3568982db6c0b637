"""medlite.edge.metrics (NumPy, runs on the cart) against scikit-learn and hand-computed cases."""

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score, roc_curve

from medlite.edge import metrics


@pytest.fixture(scope="module")
def real_scores(fp32_model, data_dir):
    """Real scores: the demo's fp32 model on the real test split."""
    from medlite.edge import datasets, load
    from medlite.edge.bench import split_probs

    split = datasets.load("pneumoniamnist", data_dir).splits["test"]
    probs = split_probs(load(fp32_model), split)
    return split.labels, probs


def test_auc_matches_sklearn_on_real_scores(real_scores):
    y, p = real_scores
    assert metrics.roc_auc(y == 1, p[:, 1]) == pytest.approx(roc_auc_score(y, p[:, 1]), abs=1e-12)


def test_auc_with_ties_matches_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.5, 0.5, 0.9, 0.5, 0.2, 0.9, 0.1])
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_ovr_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet([1, 1, 1], 300) + np.eye(3)[y] * 0.3
    p /= p.sum(1, keepdims=True)
    assert metrics.ovr_auc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))


def test_threshold_for_sensitivity_hand_cases():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.65, 0.3, 0.2, 0.1])
    assert metrics.threshold_for_sensitivity(y, s, 1.0) == 0.6  # all four positives
    assert metrics.threshold_for_sensitivity(y, s, 0.75) == 0.7  # three of four
    assert metrics.threshold_for_sensitivity(y, s, 0.5) == 0.8
    assert metrics.threshold_for_sensitivity(y, s, 0.74) == 0.7  # ceil(0.74 * 4) = 3
    r = metrics.at_threshold(y, s, 0.6)
    assert r["sensitivity"] == 1.0 and r["specificity"] == 0.75 and r["accuracy"] == 7 / 8


def test_threshold_for_sensitivity_on_real_scores(real_scores):
    y, p = real_scores
    for target in (0.9, 0.95, 0.99):
        t = metrics.threshold_for_sensitivity(y == 1, p[:, 1], target)
        assert recall_score(y, p[:, 1] >= t) >= target
        # the highest such threshold: any higher score cut loses sensitivity below the target
        higher = np.unique(p[:, 1][p[:, 1] > t])
        if len(higher):
            assert recall_score(y, p[:, 1] >= higher[0]) < target


def test_youden_matches_roc_curve(real_scores):
    y, p = real_scores
    fpr, tpr, thr = roc_curve(y, p[:, 1])
    best = np.max(tpr - fpr)
    t = metrics.threshold_youden(y == 1, p[:, 1])
    r = metrics.at_threshold(y == 1, p[:, 1], t)
    assert r["sensitivity"] + r["specificity"] - 1 == pytest.approx(best)


def test_youden_hand_case():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.8])
    assert metrics.threshold_youden(y, s) == 0.7  # J = 2/3 at 0.7 and at 0.5; highest wins


def test_bootstrap_interval_contains_auc(real_scores):
    y, p = real_scores
    lo, hi = metrics.bootstrap_auc_ci(y == 1, p[:, 1], n=300)
    auc = metrics.roc_auc(y == 1, p[:, 1])
    assert lo < auc < hi and hi - lo < 0.1
