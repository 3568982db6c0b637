"""The data loader: search order, download verification, and the errors a user sees."""

import hashlib
import io
import shutil

import numpy as np
import pytest

from medlite.measure import datasets
from medlite.edge.errors import DataError


@pytest.fixture
def places(tmp_path, monkeypatch, data_dir):
    """Three empty search places: --data-dir, $MEDLITE_DATA_DIR and the user cache."""
    flag, env, cache = (tmp_path / n for n in ("flag", "env", "cache"))
    for d in (flag, env, cache / "medlite"):
        d.mkdir(parents=True)
    monkeypatch.setenv("MEDLITE_DATA_DIR", str(env))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return flag, env, cache / "medlite"


def test_search_order_data_dir_then_env_then_cache(places, data_dir):
    flag, env, cache = places
    real = data_dir / "pneumoniamnist.npz"
    shutil.copy(real, cache / "pneumoniamnist.npz")
    assert datasets.find("pneumoniamnist", flag) == cache / "pneumoniamnist.npz"
    shutil.copy(real, env / "pneumoniamnist.npz")
    assert datasets.find("pneumoniamnist", flag) == env / "pneumoniamnist.npz"
    shutil.copy(real, flag / "pneumoniamnist.npz")
    assert datasets.find("pneumoniamnist", flag) == flag / "pneumoniamnist.npz"
    assert datasets.find("pneumoniamnist.npz", flag) == flag / "pneumoniamnist.npz"
    assert datasets.find(str(real)) == real


def test_not_found_offline_says_where_it_looked(places):
    flag, env, cache = places
    with pytest.raises(DataError) as e:
        datasets.find("pneumoniamnist", flag)
    msg = str(e.value)
    for place in (flag, env, cache):
        assert str(place / "pneumoniamnist.npz") in msg
    assert "--data" in msg and "MEDLITE_DATA_DIR" in msg and "Offline" in msg


def test_unknown_name_is_not_downloaded(places, monkeypatch):
    monkeypatch.delenv("MEDLITE_OFFLINE")
    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(DataError, match="not a known MedMNIST name"):
        datasets.find("mychestset", places[0])


def _serve(monkeypatch, payload: bytes):
    monkeypatch.delenv("MEDLITE_OFFLINE")
    seen = []

    def urlopen(url, timeout):
        seen.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(datasets.urllib.request, "urlopen", urlopen)
    return seen


def test_download_verifies_published_md5(places, monkeypatch, data_dir):
    real = (data_dir / "pneumoniamnist.npz").read_bytes()
    seen = _serve(monkeypatch, real)
    path = datasets.find("pneumoniamnist", places[0])
    assert path == places[2] / "pneumoniamnist.npz" and path.read_bytes() == real
    assert seen == [datasets.MEDMNIST_URL.format(name="pneumoniamnist")]
    assert hashlib.md5(real).hexdigest() == datasets.MEDMNIST["pneumoniamnist"][0]


def test_download_with_wrong_md5_keeps_nothing(places, monkeypatch):
    _serve(monkeypatch, b"not the file")
    with pytest.raises(DataError, match="not the published"):
        datasets.find("breastmnist", places[0])
    assert list(places[2].iterdir()) == []


def test_load_real_pneumoniamnist(data_dir):
    ds = datasets.load("pneumoniamnist", data_dir)
    assert ds.label_names == ("normal", "pneumonia")
    assert {k: len(v.labels) for k, v in ds.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert ds.channels == 1 and ds.image_size == (28, 28)
    assert np.bincount(ds.splits["test"].labels).tolist() == [234, 390]


def test_wrong_keys_are_named(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(2))
    with pytest.raises(DataError) as e:
        datasets.load_npz(bad)
    msg = str(e.value)
    assert str(bad) in msg and "missing test_images, test_labels, train_images, train_labels" in msg
    assert "it has images, labels" in msg


def test_multilabel_and_mismatch_are_refused(tmp_path, data_dir):
    ds = datasets.load("pneumoniamnist", data_dir)
    x = ds.splits["test"].images[:10]
    f = tmp_path / "multi.npz"
    np.savez(f, train_images=x, train_labels=np.zeros((10, 3), int), test_images=x, test_labels=np.zeros((10, 3), int))
    with pytest.raises(DataError, match="multi-label"):
        datasets.load_npz(f)
    f = tmp_path / "count.npz"
    np.savez(f, train_images=x, train_labels=np.zeros((9, 1), int), test_images=x, test_labels=np.zeros((10, 1), int))
    with pytest.raises(DataError, match="10 images but 9 labels"):
        datasets.load_npz(f)


def test_rgb_multiclass_file_without_val(tmp_path, data_dir):
    """Any MedMNIST-format file: RGB, three classes, no validation split (real pixels, relabelled)."""
    ds = datasets.load("pneumoniamnist", data_dir)
    x = np.repeat(ds.splits["test"].images[..., None], 3, axis=3)
    y = (np.arange(len(x)) % 3)[:, None]
    f = tmp_path / "rgbset.npz"
    np.savez(f, train_images=x, train_labels=y, test_images=x[:30], test_labels=y[:30])
    got = datasets.load_npz(f)
    assert got.channels == 3 and got.n_classes == 3 and "val" not in got.splits
    assert got.label_names == ("class_0", "class_1", "class_2")


def test_an_empty_split_is_allowed_and_an_empty_file_is_named(tmp_path, data_dir):
    """A test set alone (an empty training split), as a user makes to measure models on images kept aside, loads;
    a file whose every split is empty is a DataError that names it, not an internal error."""
    ds = datasets.load("pneumoniamnist", data_dir)
    x, y = ds.splits["test"].images[:20], ds.splits["test"].labels[:20, None]
    f = tmp_path / "kept_aside.npz"
    np.savez(f, train_images=x[:0], train_labels=y[:0], test_images=x, test_labels=y)
    got = datasets.load_npz(f)
    assert len(got.splits["test"].labels) == 20 and got.n_classes == 2
    empty = tmp_path / "empty.npz"
    np.savez(empty, train_images=x[:0], train_labels=y[:0], test_images=x[:0], test_labels=y[:0])
    with pytest.raises(DataError, match="every split is empty") as e:
        datasets.load_npz(empty)
    assert str(empty) in str(e.value)
