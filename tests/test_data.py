"""Tests for nas_jax.data: registry, loaders (docs/protocol.md §a.1-§a.2) and augmentation (§a.3)."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.data import (
    DATASET_STATS,
    DATASETS,
    DatasetUnavailableError,
    augment,
    augment_batch,
    channel_stats,
    load_dataset,
    subsample,
    to_float,
)

SAMPLE_NPZ = "/work/shared/data/cifar10-sample.npz"
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_shapes_split_and_stats(digits):
    assert digits.x_train.shape == (1437, 32, 32, 3)
    assert digits.x_test.shape == (360, 32, 32, 3)
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int32
    assert digits.num_classes == 10
    assert set(np.unique(digits.y_train)) == set(range(10))
    assert digits.y_test.min() >= 0 and digits.y_test.max() <= 9
    # Stratified: each class holds ~20% of its images out (178..183 per class).
    assert np.bincount(digits.y_test, minlength=10).min() >= 35
    # Grey replicated to RGB; smooth upsampling spans the full range.
    np.testing.assert_array_equal(digits.x_train[..., 0], digits.x_train[..., 2])
    assert digits.x_train.max() == 255 and digits.x_train.min() == 0
    assert digits.mean == channel_stats(digits.x_train)[0]
    assert digits.std == channel_stats(digits.x_train)[1]


def test_digits_deterministic(digits):
    again = load_dataset("digits")
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_digits_native_is_exact_8x8():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", native=True)
    assert ds.x_train.shape == (1437, 8, 8, 3) and ds.x_test.shape == (360, 8, 8, 3)
    raw = load_digits()
    expected = np.rint(raw.images * 255.0 / 16.0).astype(np.uint8)
    all_images = {img.tobytes() for img in expected}
    assert all(img[..., 1].tobytes() in all_images for img in ds.x_test[:20])


def test_digits_bilinear_matches_jax_resize():
    from nas_jax.data.digits import bilinear_matrix

    img = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    weights = bilinear_matrix(8, 32)
    mine = np.einsum("ih,nhw,jw->nij", weights, img, weights)
    ref = jax.image.resize(jnp.asarray(img), (2, 32, 32), "linear", antialias=False)
    np.testing.assert_allclose(mine, np.asarray(ref), atol=1e-6)


# ------------------------------------------------------------------------- registry


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("mnist")
    for name in ("digits", "cifar10", "cifar100", "imagenet32", "npz:"):
        assert name in str(err.value)
    assert "npz:PATH" in DATASETS


def test_unknown_option_names_valid_ones():
    with pytest.raises(ValueError, match="native"):
        load_dataset("digits", nativ=True)


def test_subsample_keeps_constants(digits):
    small = subsample(digits, n_train=100, n_test=50, seed=1)
    assert small.x_train.shape[0] == 100 and small.y_test.shape == (50,)
    assert small.mean == digits.mean and small.num_classes == 10
    np.testing.assert_array_equal(subsample(digits, 100, 50, 1).y_train, small.y_train)
    with pytest.raises(ValueError, match="n_train"):
        subsample(digits, n_train=10**6)


# ---------------------------------------------------------------------------- cifar


def _pretend_online(monkeypatch):
    from nas_jax.data import tfds_source

    monkeypatch.setattr(tfds_source, "_offline_reason", lambda url, timeout_s: None)


@pytest.mark.parametrize("name, num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_through_tfds_mock(monkeypatch, name, num_classes):
    import tensorflow_datasets as tfds

    _pretend_online(monkeypatch)  # mock_data never has the data "prepared"
    with tfds.testing.mock_data(num_examples=200):
        ds = load_dataset(name)
    assert ds.x_train.shape == (200, 32, 32, 3) and ds.x_test.shape == (200, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.num_classes == num_classes
    assert ds.y_train.min() >= 0 and ds.y_train.max() < num_classes
    if name == "cifar100":  # fine labels: 200 random draws exceed the 20 coarse ones
        assert ds.y_train.max() >= 20
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD  # §a.2, shared by C100


def _cifar_archive(tmp_path, name, n_train, n_test, seed=0):
    """Synthetic CIFAR binary release (.tar.gz) plus the arrays it holds."""
    rng = np.random.default_rng(seed)
    prefix, n_labels = ("cifar-10-batches-bin/", 1) if name == "cifar10" else ("cifar-100-binary/", 2)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10 if name == "cifar10" else 20, (n, n_labels))
        if name == "cifar100":
            labels[:, 1] = rng.integers(0, 100, n)  # fine label differs from coarse
        data[split] = (labels, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))

    def rows(labels, images):
        planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        return np.concatenate([labels, planar], axis=1).astype(np.uint8).tobytes()

    if name == "cifar10":
        train_chunks = np.array_split(np.arange(n_train), 5)
        files = {
            f"data_batch_{i + 1}.bin": rows(data["train"][0][c], data["train"][1][c])
            for i, c in enumerate(train_chunks)
        }
        files["test_batch.bin"] = rows(*data["test"])
        files["batches.meta.txt"] = "\n".join(f"class{i}" for i in range(10)).encode()
    else:
        files = {"train.bin": rows(*data["train"]), "test.bin": rows(*data["test"])}
        files["coarse_label_names.txt"] = "\n".join(f"super{i}" for i in range(20)).encode()
        files["fine_label_names.txt"] = "\n".join(f"fine{i}" for i in range(100)).encode()
    path = tmp_path / f"{name}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for fname, blob in files.items():
            info = tarfile.TarInfo(prefix + fname)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return str(path), data


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_tf_free_prepare_and_read(monkeypatch, tmp_path, name):
    """The real prepare (archive -> array_record) and read path, minus the HTTP fetch."""
    from nas_jax.data import tfds_source

    archive, data = _cifar_archive(tmp_path, name, n_train=12, n_test=5)
    _pretend_online(monkeypatch)
    monkeypatch.setattr(tfds_source, "_fetch_archive", lambda dl_manager, url: archive)
    data_dir = str(tmp_path / "tfds")
    ds = load_dataset(name, data_dir=data_dir)
    fine = 0 if name == "cifar10" else 1
    np.testing.assert_array_equal(ds.x_train, data["train"][1])
    np.testing.assert_array_equal(ds.y_train, data["train"][0][:, fine])
    np.testing.assert_array_equal(ds.x_test, data["test"][1])
    np.testing.assert_array_equal(ds.y_test, data["test"][0][:, fine])
    assert ds.class_names[:2] == (("class0", "class1") if fine == 0 else ("fine0", "fine1"))
    assert os.path.isdir(os.path.join(data_dir, name, "3.0.2"))

    cache = os.path.join(data_dir, name, "3.0.2", tfds_source.CACHE_FILE)
    assert os.path.isfile(cache)

    # Later loads read the prepared files (cached or not) and never prepare again.
    def no_prepare(*args, **kwargs):
        raise AssertionError("dataset was prepared twice")

    monkeypatch.setattr(tfds_source, "_prepare", no_prepare)
    for use_cache in (True, False):
        again = load_dataset(name, data_dir=data_dir, cache=use_cache)
        np.testing.assert_array_equal(again.x_train, ds.x_train)
        np.testing.assert_array_equal(again.y_test, ds.y_test)
    # A cache whose sizes disagree with the prepared data is ignored and rewritten.
    np.savez(
        cache,
        **{
            k: np.zeros((1, 32, 32, 3) if k[0] == "x" else 1, np.uint8)
            for k in ("x_train", "y_train", "x_test", "y_test")
        },
    )
    np.testing.assert_array_equal(load_dataset(name, data_dir=data_dir).x_test, ds.x_test)
    assert len(np.load(cache)["y_train"]) == 12


def test_cifar_reads_tfrecord_prepared_data_without_tensorflow(monkeypatch, tmp_path):
    """A TensorFlow user's `tfds build` output (TFRecord) is read by the fallback."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core import decode

    from nas_jax.data import tfds_source

    archive, data = _cifar_archive(tmp_path, "cifar10", n_train=10, n_test=4)
    _pretend_online(monkeypatch)
    monkeypatch.setattr(tfds_source, "_fetch_archive", lambda dl_manager, url: archive)
    data_dir = str(tmp_path / "tfds")
    load_dataset("cifar10", data_dir=data_dir, cache=False)
    version_dir = os.path.join(data_dir, "cifar10", "3.0.2")
    builder = tfds.builder("cifar10", data_dir=data_dir)
    for split in ("train", "test"):
        raw = builder.as_data_source(split, deserialize_method=decode.DeserializeMethod.RAW_BYTES)
        with open(os.path.join(version_dir, f"cifar10-{split}.tfrecord-00000-of-00001"), "wb") as f:
            for i in range(len(raw)):
                record = bytes(raw[i])
                f.write(struct.pack("<Q", len(record)) + b"\0" * 4 + record + b"\0" * 4)
    for fname in os.listdir(version_dir):
        if ".array_record-" in fname:
            os.remove(os.path.join(version_dir, fname))
    info_path = os.path.join(version_dir, "dataset_info.json")
    with open(info_path) as f:
        info = json.load(f)
    info["fileFormat"] = "tfrecord"
    with open(info_path, "w") as f:
        json.dump(info, f)

    ds = load_dataset("cifar10", data_dir=data_dir, cache=False)
    np.testing.assert_array_equal(ds.x_train, data["train"][1])
    np.testing.assert_array_equal(ds.y_test, data["test"][0][:, 0])
    assert not os.path.exists(os.path.join(version_dir, tfds_source.CACHE_FILE))


def test_cifar_offline_fails_fast_naming_the_directory(tmp_path):
    empty = tmp_path / "no_data_here"
    start = time.monotonic()
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("cifar10", data_dir=str(empty))
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert str(empty) in message and "npz:" in message and "tfds build" in message


def test_cifar_download_false_fails_without_network(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("cifar100", data_dir=str(tmp_path), download=False)


# ----------------------------------------------------------------------- imagenet32


def _planar_image(index: int) -> np.ndarray:
    """A 3x32x32 image with distinct per-channel values: c*80 + (h*32+w+index) % 61."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return (c * 80 + (h * 32 + w + index) % 61).astype(np.uint8)


def _write_imagenet32(folder, labels_per_file, as_npz=()):
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in labels_per_file.items():
        data = np.stack([_planar_image(i).reshape(-1) for i in range(len(labels))])
        if name in as_npz:
            np.savez(folder / f"{name}.npz", data=data, labels=np.asarray(labels))
        else:
            with open(folder / name, "wb") as f:
                pickle.dump({"data": data, "labels": list(labels)}, f)


@pytest.fixture
def imagenet32_dir(tmp_path):
    from nas_jax.data.imagenet32 import TRAIN_FILES, VAL_FILE

    files = {name: [1, 60, 61, 1000, 30] for name in TRAIN_FILES}
    files[VAL_FILE] = [61, 2, 60, 999]
    _write_imagenet32(tmp_path / "imagenet32", files, as_npz=(TRAIN_FILES[0],))
    return tmp_path


def test_imagenet32_filters_shifts_and_transposes(imagenet32_dir):
    ds = load_dataset("imagenet32", data_dir=str(imagenet32_dir))
    assert ds.num_classes == 60
    # Per train file: 1-based labels 1, 60, 30 survive as 0, 59, 29; 61 and 1000 go.
    np.testing.assert_array_equal(ds.y_train, np.tile([0, 59, 29], 10))
    np.testing.assert_array_equal(ds.y_test, [1, 59])
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_train.dtype == np.uint8
    # NHWC: x[n, h, w, c] equals the planar source P[c, h, w] of the kept row.
    kept_rows_val = [1, 2]
    for n, row in enumerate(kept_rows_val):
        np.testing.assert_array_equal(ds.x_test[n], _planar_image(row).transpose(1, 2, 0))
    np.testing.assert_array_equal(ds.x_train[1], _planar_image(1).transpose(1, 2, 0))
    assert ds.x_test[0, 5, 7, 2] == 160 + (5 * 32 + 7 + 1) % 61
    assert ds.mean == DATASET_STATS["imagenet32"][0]
    assert abs(ds.mean[0] - 0.4811) < 1e-4 and abs(ds.std[2] - 0.2553) < 1e-4


def test_imagenet32_missing_file(imagenet32_dir):
    os.remove(imagenet32_dir / "imagenet32" / "val_data")
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("imagenet32", data_dir=str(imagenet32_dir))
    message = str(err.value)
    assert "val_data" in message and str(imagenet32_dir / "imagenet32") in message
    assert "image-net.org" in message


# ------------------------------------------------------------------------------ npz


def _save_npz(path, **arrays):
    base = {
        "x_train": np.random.default_rng(0).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.zeros((2, 4, 4, 3), np.uint8),
        "y_test": np.array([1, 2]),
    }
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return f"npz:{path}"


def test_npz_round_trip(tmp_path):
    name = _save_npz(tmp_path / "d.npz")
    ds = load_dataset(name)
    raw = np.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.x_train, raw["x_train"])
    assert ds.num_classes == 3 and ds.y_train.dtype == np.int32
    assert ds.mean == channel_stats(raw["x_train"])[0]


def test_npz_float_grey_and_optional_keys(tmp_path):
    x = np.linspace(0, 1, 6 * 16).reshape(6, 4, 4, 1).astype(np.float32)
    name = _save_npz(
        tmp_path / "f.npz",
        x_train=x,
        x_test=x[:2],
        num_classes=np.array(5),
        class_names=np.array(list("abcde")),
        mean=np.array([0.5] * 3),
        std=np.array([0.25] * 3),
    )
    ds = load_dataset(name)
    assert ds.x_train.shape == (6, 4, 4, 3) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[..., 2], np.rint(x[..., 0] * 255))
    assert ds.num_classes == 5 and ds.class_names == tuple("abcde")
    assert ds.mean == (0.5, 0.5, 0.5) and ds.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    "arrays, pattern",
    [
        ({"y_test": None}, "missing arrays \\['y_test'\\]"),
        ({"x_train": np.zeros((6, 4, 4), np.uint8)}, "rank-4"),
        ({"x_train": np.full((6, 4, 4, 3), 2.0, np.float32)}, "\\[0, 1\\]"),
        ({"y_train": np.array([0, 1, 2, 0, 1, 7]), "num_classes": np.array(3)}, "out of range"),
        ({"y_train": np.array([0, -1, 2, 0, 1, 2])}, "negative"),
        ({"y_train": np.array([0, 1, 2])}, "one per image"),
        ({"class_names": np.array(["a", "b"]), "num_classes": np.array(3)}, "class_names"),
        ({"x_test": np.zeros((2, 5, 5, 3), np.uint8)}, "same HWC"),
        ({"y_train": np.array([0, 1, 2, 0, 1, 9])}, r"classes \[3, 4, 5, 6, 7, 8\] never occur.*num_classes"),
        ({"x_test": np.zeros((0, 4, 4, 3), np.uint8), "y_test": np.zeros((0,), np.int64)}, "x_test holds no images"),
    ],
)
def test_npz_validation_errors(tmp_path, arrays, pattern):
    name = _save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=pattern):
        load_dataset(name)


def test_npz_that_is_not_an_archive_is_named(tmp_path):
    from nas_jax.errors import UserError

    (tmp_path / "notes.npz").write_text("x_train,y_train\n1,2\n")
    with pytest.raises(UserError, match=r"is not a .npz archive.*text starting 'x_train,y_train"):
        load_dataset(f"npz:{tmp_path / 'notes.npz'}")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(UserError, match="single-array .npy file"):
        load_dataset(f"npz:{tmp_path / 'one.npz'}")


def test_npz_missing_file(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


@pytest.mark.skipif(not os.path.exists(SAMPLE_NPZ), reason="sample not present")
def test_npz_real_cifar10_sample():
    ds = load_dataset(f"npz:{SAMPLE_NPZ}")
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane"
    assert len(ds.y_train) == len(ds.x_train) and len(ds.y_test) == len(ds.x_test)
    np.testing.assert_allclose(ds.mean, CIFAR10_MEAN, atol=0.02)


# ------------------------------------------------------------------------- augment


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.integers(1, 256, (8, 32, 32, 3), dtype=np.uint8))


def test_augment_range_shape_and_jit(batch):
    fn = jax.jit(lambda k, x: augment_batch(k, x) * 1.0)  # nested inside a user jit
    out = fn(jax.random.key(0), batch)
    assert out.shape == batch.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(out, augment_batch(jax.random.key(0), batch))


def test_augment_identity_equals_to_float(batch):
    out = augment_batch(jax.random.key(3), batch, crop_padding=0, flip=False, cutout=0)
    np.testing.assert_array_equal(out, to_float(batch))
    # XLA turns /255 into *(1/255): equal to NumPy's x/255 up to one float32 ulp.
    np.testing.assert_allclose(to_float(batch), np.asarray(batch, np.float32) / 255, rtol=1e-7)


def test_crop_matches_numpy_reference(batch):
    images = np.asarray(batch[:2])
    oy, ox = np.array([1, 8]), np.array([6, 0])
    out = augment.crop_flip(images, oy, ox, np.array([False, False]), padding=4)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for n in range(2):
        np.testing.assert_array_equal(out[n], padded[n, oy[n] : oy[n] + 32, ox[n] : ox[n] + 32])
    assert out.dtype == jnp.uint8
    assert (np.asarray(out[1, -4:]) == 0).all()  # bottom padding rows are black


def test_flip_matches_numpy_reference(batch):
    images = np.asarray(batch[:2])
    out = augment.crop_flip(images, np.zeros(2, int), np.zeros(2, int), np.array([True, False]), padding=0)
    np.testing.assert_array_equal(out[0], images[0, :, ::-1])
    np.testing.assert_array_equal(out[1], images[1])
    # Crop, then flip the crop.
    out = augment.crop_flip(images[:1], np.array([2]), np.array([7]), np.array([True]), padding=4)
    padded = np.pad(images[:1], ((0, 0), (4, 4), (4, 4), (0, 0)))
    np.testing.assert_array_equal(out[0], padded[0, 2:34, 7:39][:, ::-1])


def test_cutout_hole_size_and_fill():
    x = jnp.full((3, 32, 32, 3), 0.5, jnp.float32)
    fill = (0.1, 0.2, 0.3)
    out = augment.apply_cutout(x, jnp.array([16, 0, 31]), jnp.array([10, 31, 0]), size=16, fill=fill)
    hole = np.asarray((out != 0.5).all(axis=-1))
    # Interior: 16x16 at rows 8..23, cols 2..17. Corners: clipped to 8x9 and 9x8.
    assert hole[0].sum() == 256 and hole[0, 8:24, 2:18].all()
    assert hole[1].sum() == 8 * 9 and hole[1, :8, 23:].all()
    assert hole[2].sum() == 9 * 8 and hole[2, 23:, :8].all()
    np.testing.assert_allclose(np.asarray(out[0, 10, 5]), fill)
    default = augment.apply_cutout(x, jnp.array([16]), jnp.array([16]), size=16)
    assert float(default[0, 16, 16, 0]) == 0.0  # default fill: black in pixel space


def test_augment_cutout_with_mean_fill(batch):
    out = augment_batch(jax.random.key(1), batch, crop_padding=0, flip=False, cutout=16, cutout_fill=list(CIFAR10_MEAN))
    filled = np.isclose(np.asarray(out), np.asarray(CIFAR10_MEAN, np.float32)).all(axis=-1)
    untouched = np.asarray(out == to_float(batch)).all(axis=-1)
    assert (filled | untouched).all()
    assert (filled.sum(axis=(1, 2)) >= 64).all()  # smallest possible hole: 8 x 8


def test_augment_randomness(batch):
    same = jnp.broadcast_to(batch[:1], batch.shape)
    a = augment_batch(jax.random.key(0), same)
    b = augment_batch(jax.random.key(1), same)
    assert not np.array_equal(a, b)  # different keys
    assert not np.array_equal(a[0], a[1])  # different examples of one batch
    params = augment.sample_params(jax.random.key(0), 2000, 32, 32, crop_padding=4)
    assert 0.45 < float(params.flip.mean()) < 0.55
    assert set(np.unique(params.offset_y)) == set(range(9))
    assert int(params.center_x.min()) == 0 and int(params.center_x.max()) == 31


def test_augment_rejects_float_input(batch):
    with pytest.raises(TypeError, match="uint8"):
        augment_batch(jax.random.key(0), to_float(batch))
