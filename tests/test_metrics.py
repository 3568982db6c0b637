"""medlite.edge.metrics (NumPy, runs on the cart) against scikit-learn and hand-computed cases."""

import numpy as np
import pytest
from sklearn.metrics import recall_score, roc_auc_score, roc_curve

from medlite.edge import metrics


@pytest.fixture(scope="module")
def real_scores(fp32_model, data_dir):
    """Real scores: the demo's fp32 model on the real test split."""
    from medlite.edge import load
    from medlite.measure import datasets
    from medlite.measure.bench import split_probs

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


def test_decide_follows_the_positive_class_whichever_index_it_has():
    from medlite.edge import Contract, InputSpec, decide

    spec = InputSpec(28, 28, 1)
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.25, 0.75]])
    second = Contract(input=spec, labels=("normal", "pneumonia"), positive_index=1, threshold=0.3)
    first = Contract(input=spec, labels=("malignant", "normal, benign"), positive_index=0, threshold=0.7)
    assert decide(probs, second).tolist() == [0, 1, 1]  # pneumonia whenever its score reaches 0.3
    assert decide(probs, first).tolist() == [0, 1, 1]  # malignant only when its own score reaches 0.7
    assert decide(probs[0], first) == 0 and decide(probs[1], first) == 1
    three = Contract(input=spec, labels=("a", "b", "c"))
    assert decide(np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]), three).tolist() == [1, 0]


def test_runtime_decides_with_the_same_rule_when_the_positive_class_is_first(int8_model, data_dir):
    """A model whose positive class is label 0: the runtime's label and flag follow decide(), not index 1."""
    from medlite.convert.contract_writer import embed_contract
    from medlite.edge import decide, load, read_contract

    data = int8_model.read_bytes()
    c = read_contract(data)
    flipped = c.replace(positive_index=0, threshold=0.5)
    model = load(embed_contract(data, flipped), backend="cpu")
    for img in sorted((data_dir / "images").glob("*.png")):
        p = model.predict(img)
        scores = np.array([p.scores[name] for name in c.labels])
        assert p.label == c.labels[int(decide(scores, flipped))]
        assert p.positive == (p.scores[c.labels[0]] >= 0.5) and p.score == p.scores[c.labels[0]]


def test_decide_on_one_vector_is_decide_on_rows_even_at_a_float32_tie():
    """One score vector of Python floats (as a prediction gives) decides as its row among float32 rows does,
    including a score that equals the threshold only once both are float32."""
    from types import SimpleNamespace

    from medlite.edge.decision import decide

    binary = SimpleNamespace(labels=("normal", "pneumonia"), positive_index=1, threshold=0.1000000015, calibration={})
    tie = np.array([0.9, 0.1], dtype=np.float32)
    assert decide(tie.tolist(), binary) == decide(tie[None], binary)[0] == 1
    first = SimpleNamespace(labels=("disease", "normal"), positive_index=0, threshold=0.3, calibration={})
    multi = SimpleNamespace(labels=("a", "b", "c"), positive_index=None, threshold=None, calibration={})
    rng = np.random.default_rng(0)
    for contract, n in ((binary, 2), (first, 2), (multi, 3)):
        rows = rng.integers(0, 4, size=(200, n)).astype(np.float32) / 4  # many ties
        assert [int(decide(r.tolist(), contract)) for r in rows] == decide(rows, contract).tolist()
