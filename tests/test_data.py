"""Data loading: embedded digits, .npz files and image folders, and the errors each can raise."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import load_arrays, load_data
from edgekd.errors import DataError


def _sizes(ds) -> int:
    return len(ds.y_train) + len(ds.y_val) + len(ds.y_test)


def _check_consistent(ds) -> None:
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert len(x) == len(y) > 0
        assert x.shape[1:] == ds.input_shape


# --- digits ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_digits_default_shape_and_classes(digits):
    assert digits.input_shape == (1, 32, 32)
    assert digits.num_classes == 10
    assert _sizes(digits) == 1797
    _check_consistent(digits)
    assert set(np.unique(digits.y_train)) == set(range(10))


def test_digits_none_is_digits(digits):
    again = load_data(None)
    assert again.name == digits.name == "digits"
    assert again.describe() == digits.describe()


def test_digits_deterministic(digits):
    again = load_data("digits")
    assert np.array_equal(again.x_train, digits.x_train)
    assert np.array_equal(again.y_train, digits.y_train)
    assert np.array_equal(again.x_val, digits.x_val)
    assert np.array_equal(again.y_test, digits.y_test)


def test_digits_resolution():
    ds = load_data("digits", resolution=16)
    assert ds.input_shape == (1, 16, 16)
    assert _sizes(ds) == 1797


# --- .npz ------------------------------------------------------------------------------------------------

def _xy(n: int = 200, classes: int = 4, shape=(8, 8)):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = np.arange(n) % classes  # every class present
    return x, y


def test_npz_x_y(tmp_path):
    x, y = _xy()
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    ds = load_data(str(path))
    assert ds.name == "data.npz"
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 4
    assert _sizes(ds) == 200
    _check_consistent(ds)


def test_npz_resolution(tmp_path):
    x, y = _xy()
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    assert load_data(str(path), resolution=12).input_shape == (1, 12, 12)


def test_many_small_classes_still_split_with_the_datas_shares(tmp_path):
    # each class alone rounds 5 images to no validation image; the whole data still has 50 to give
    x = np.random.default_rng(0).random((500, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(100), 5)
    np.savez(tmp_path / "small.npz", x=x, y=y)
    ds = load_data(str(tmp_path / "small.npz"), seed=3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (350, 50, 100)
    assert set(ds.y_train.tolist()) == set(range(100))  # every class keeps training images
    again = load_data(str(tmp_path / "small.npz"), seed=3)
    assert np.array_equal(ds.y_val, again.y_val) and np.array_equal(ds.x_test, again.x_test)


def test_data_that_splits_class_by_class_keeps_that_split():
    from edgekd.data import split_indices

    y = np.repeat(np.arange(4), [40, 33, 27, 61])
    parts = split_indices("d", y, 0)
    for label, n in zip(range(4), (40, 33, 27, 61)):
        assert (y[parts["test"]] == label).sum() == round(n * 0.2)
        assert (y[parts["val"]] == label).sum() == round(n * 0.1)


def test_too_few_images_to_split_say_how_to_give_the_splits(tmp_path):
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "six.npz", x=x, y=np.arange(6))
    with pytest.raises(DataError, match="6 images are too few to split into train/val/test") as exc:
        load_data(str(tmp_path / "six.npz"))
    assert "x_train/y_train/x_test/y_test" in exc.value.fix


@pytest.mark.parametrize("form", ["float", "column", "float column"])
def test_labels_that_convert_without_loss_are_taken(tmp_path, form):
    # a pandas column arrives as float64, a scikit-learn target often as (N, 1)
    x = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    y = np.arange(60) % 3
    stored = y.astype(np.float64) if "float" in form else y
    np.savez(tmp_path / "d.npz", x=x, y=stored[:, None] if "column" in form else stored)
    ds = load_data(str(tmp_path / "d.npz"))
    assert ds.num_classes == 3 and ds.y_train.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([ds.y_train, ds.y_val, ds.y_test])), np.sort(y))


def test_boolean_labels_are_two_classes_and_fractional_ones_are_refused(tmp_path):
    x = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x=x, y=np.arange(60) % 2 == 1)
    assert load_data(str(tmp_path / "b.npz")).num_classes == 2
    for bad, shown in ((np.arange(60) % 3 + 0.5, "0.5"), (np.where(np.arange(60) == 7, np.nan, 1.0), "nan")):
        np.savez(tmp_path / "f.npz", x=x, y=bad)
        with pytest.raises(DataError, match=f"y holds values that are not class numbers, e.g. {shown}"):
            load_data(str(tmp_path / "f.npz"))


def _brightness_by_name(ds):
    """The mean pixel of each image of ``ds``'s test split, by the class name it is labelled with."""
    means = ds.x_test.mean(axis=(1, 2, 3))
    return {name: means[ds.y_test == i] for i, name in enumerate(ds.class_names)}


def test_class_names_as_labels_are_numbered_in_sorted_order_or_by_class_names(tmp_path):
    # each class has its own brightness, so an image's label can be checked against the image
    rng = np.random.default_rng(0)
    names = np.array(["dog", "cat", "bird"])[np.arange(90) % 3]
    x = (rng.random((90, 1, 8, 8)) * 0.1 + np.where(names == "dog", 0.8, np.where(names == "cat", 0.4, 0))
         [:, None, None, None]).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, y=names)
    np.savez(tmp_path / "b.npz", x=x, y=names.astype("S"))
    np.savez(tmp_path / "c.npz", x=x, y=names, class_names=np.array(["dog", "cat", "bird"]))
    sorted_, given = load_data(str(tmp_path / "s.npz")), load_data(str(tmp_path / "c.npz"))
    assert sorted_.class_names == load_data(str(tmp_path / "b.npz")).class_names == ("bird", "cat", "dog")
    assert given.class_names == ("dog", "cat", "bird")
    for ds in (sorted_, given):
        by_name = _brightness_by_name(ds)
        assert by_name["bird"].max() < by_name["cat"].min() and by_name["cat"].max() < by_name["dog"].min()
    # a pandas column of names reaches numpy as objects
    assert load_arrays((x, np.array(list(names), dtype=object))).class_names == ("bird", "cat", "dog")


def test_numbers_saved_as_text_are_class_numbers_not_names(tmp_path):
    x = np.random.default_rng(0).random((120, 1, 8, 8)).astype(np.float32)
    y = np.arange(120) % 12
    np.savez(tmp_path / "t.npz", x=x, y=y.astype(str))
    np.savez(tmp_path / "n.npz", x=x, y=y)
    as_text, as_numbers = load_data(str(tmp_path / "t.npz")), load_data(str(tmp_path / "n.npz"))
    assert as_text.class_names == as_numbers.class_names == tuple(str(i) for i in range(12))
    assert np.array_equal(as_text.y_test, as_numbers.y_test)  # "10" is class 10, not the third name in text order


def test_named_labels_are_numbered_the_same_in_every_split(tmp_path):
    x = np.random.default_rng(0).random((90, 1, 8, 8)).astype(np.float32)
    names = np.array(["dog", "cat", "bird"])[np.arange(90) % 3]
    np.savez(tmp_path / "split.npz", x_train=x[:60], y_train=names[:60], x_test=x[60:80], y_test=names[60:80])
    ds = load_data(str(tmp_path / "split.npz"))
    assert [ds.class_names[i] for i in ds.y_test] == list(names[60:80])
    # a test set alone (validate, gate) holding some of the classes only is named, not renumbered from 0
    np.savez(tmp_path / "test.npz", x_test=x[:20], y_test=np.where(names[:20] == "bird", "cat", names[:20]))
    alone = load_data(str(tmp_path / "test.npz"))
    assert alone.class_names == ("cat", "dog") and list(alone.y_test[:2]) == [1, 0]


@pytest.mark.parametrize("arrays, message", [
    (lambda x, n: dict(x_train=x[:60], y_train=n[:60], x_test=x[60:], y_test=np.arange(30) % 3),
     "y_train holds class names but y_test holds numbers"),
    (lambda x, n: dict(x=x, y=n, class_names=np.array(["dog", "cat"])),
     "y has label 'bird', which class_names does not list"),
])
def test_named_labels_that_cannot_be_numbered_are_refused(tmp_path, arrays, message):
    x = np.random.default_rng(0).random((90, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "bad.npz", **arrays(x, np.array(["dog", "cat", "bird"])[np.arange(90) % 3]))
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "bad.npz"))


@pytest.mark.parametrize("arrays, message", [
    (lambda x, n: dict(x_train=x[:60][n[:60] != "bird"], y_train=n[:60][n[:60] != "bird"], x_test=x[60:],
                       y_test=n[60:]),
     r"^arrays: no training image has class 'bird' \(it appears only in y_test\); add training images of 'bird', "
     r"or drop its images from y_test$"),
    (lambda x, n: dict(x=x, y=n, class_names=np.array(["dog", "cat", "bird", "eel"])),
     r"^arrays: class_names lists 'eel', which no image has; add images of 'eel', or drop it from class_names$"),
    (lambda x, n: dict(x_train=x[:60], y_train=n[:60], x_test=x[60:], y_test=n[60:],
                       class_names=np.array(["dog", "cat", "bird", "eel"])),
     r"^arrays: class_names lists 'eel', which no training image has; add training images of 'eel', or drop"),
])
def test_a_named_class_no_training_image_has_is_named_by_its_name(arrays, message):
    """Said as "no training image has label 0 ... number the classes 0..K-1": a number the user never saw
    ('bird' sorted first) and a fix that did not apply to labels given as names."""
    x = np.random.default_rng(0).random((90, 1, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=message):
        load_data(arrays(x, np.array(["dog", "cat", "bird"])[np.arange(90) % 3]))


def test_one_hot_labels_are_class_numbers_and_keep_their_class_count(tmp_path):
    # Keras' to_categorical; the columns are the classes
    x = np.random.default_rng(0).random((80, 1, 8, 8)).astype(np.float32)
    y = np.arange(80) % 4
    np.savez(tmp_path / "oh.npz", x=x, y=np.eye(4, dtype=np.float32)[y])
    np.savez(tmp_path / "n.npz", x=x, y=y)
    one_hot, numbered = load_data(str(tmp_path / "oh.npz")), load_data(str(tmp_path / "n.npz"))
    assert one_hot.class_names == numbered.class_names and np.array_equal(one_hot.y_test, numbered.y_test)
    np.savez(tmp_path / "gap.npz", x=x, y=np.eye(5)[y])
    with pytest.raises(DataError, match="no training image has label 4"):
        load_data(str(tmp_path / "gap.npz"))


@pytest.mark.parametrize("labels, message", [
    (np.full((80, 4), 0.25), r"y holds soft labels \(rows of class scores, shape \(80, 4\)\)"),
    (np.eye(4)[np.arange(80) % 4] + np.eye(4)[(np.arange(80) + 1) % 4], "y row 0 marks 2 classes, not one"),
    (np.where(np.eye(4)[np.arange(80) % 4] == 1, np.nan, 0), "y holds NaN or infinite values"),
])
def test_label_rows_that_are_not_one_hot_are_refused(tmp_path, labels, message):
    x = np.random.default_rng(0).random((80, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "bad.npz", x=x, y=labels)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "bad.npz"))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_last_images_of_one_to_four_channels_are_read_as_nchw(tmp_path, channels):
    # RGBA (and gray + alpha) stored as PIL and numpy hand them over: (N, H, W, C)
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (40, channels, 12, 10), dtype=np.uint8)
    y = np.arange(40) % 2
    np.savez(tmp_path / "last.npz", x=nchw.transpose(0, 2, 3, 1), y=y)
    np.savez(tmp_path / "first.npz", x=nchw, y=y)
    last, first = load_data(str(tmp_path / "last.npz")), load_data(str(tmp_path / "first.npz"))
    assert last.input_shape == first.input_shape == (channels, 12, 10)
    assert np.array_equal(last.x_train, first.x_train)


def test_npz_predefined_splits_carve_val(tmp_path):
    x, y = _xy()
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x[:160], y_train=y[:160], x_test=x[160:], y_test=y[160:])
    ds = load_data(str(path))
    assert len(ds.y_test) == 40
    assert len(ds.y_val) == 20  # 12.5% of 160
    assert len(ds.y_train) == 140
    assert ds.num_classes == 4
    _check_consistent(ds)


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "absent.npz"))


def test_npz_garbage(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"this is not a numpy archive\x00\x01\x02" * 10)
    with pytest.raises(DataError, match="cannot be read"):
        load_data(str(path))


def test_npz_wrong_keys(tmp_path):
    x, y = _xy()
    path = tmp_path / "keys.npz"
    np.savez(path, images=x, labels=y)
    with pytest.raises(DataError, match=r"\['images', 'labels'\], not 'x' and 'y'"):
        load_data(str(path))


def test_npz_arrays_under_other_names_are_refused_or_said(tmp_path):
    """x_valid/y_valid (fastai's, Kaggle's spelling) were dropped without a word, and validation carved from
    x_train instead; any other array beside the ones read was left out unsaid."""
    x, y = _xy(120)
    path = tmp_path / "tvt.npz"
    np.savez(path, x_train=x[:80], y_train=y[:80], x_valid=x[80:100], y_valid=y[80:100], x_test=x[100:],
             y_test=y[100:])
    with pytest.raises(DataError, match=r"tvt.npz: has arrays x_valid, y_valid, which edgekd does not read \(it "
                                        r"reads x/y, x_train/y_train, x_val/y_val, x_test/y_test and class_names\); "
                                        r"store a validation split as x_val/y_val"):
        load_data(str(path))
    np.savez(path, x=x, y=y, ids=np.arange(len(y)))
    ds = load_data(str(path))
    assert _sizes(ds) == 120 and ds.notes[-1] == (f"{path}: arrays ids were not read (edgekd reads x/y, "
                                                  "x_train/y_train, x_val/y_val, x_test/y_test and class_names)")


def test_npz_single_class(tmp_path):
    x, _ = _xy()
    path = tmp_path / "one.npz"
    np.savez(path, x=x, y=np.zeros(len(x), dtype=np.int64))
    with pytest.raises(DataError, match="single class"):
        load_data(str(path))


def test_npz_label_length_mismatch(tmp_path):
    x, y = _xy()
    path = tmp_path / "short.npz"
    np.savez(path, x=x, y=y[:-5])
    with pytest.raises(DataError, match=r"y has shape \(195,\).*for 200 images"):
        load_data(str(path))


def test_npz_float_labels(tmp_path):
    x, y = _xy()
    path = tmp_path / "float.npz"
    np.savez(path, x=x, y=(y + 0.25).astype(np.float32))  # whole numbers as floats are taken
    with pytest.raises(DataError, match="integer class labels"):
        load_data(str(path))


def test_npz_negative_labels(tmp_path):
    x, y = _xy()
    path = tmp_path / "neg.npz"
    np.savez(path, x=x, y=y - 1)
    with pytest.raises(DataError, match="negative labels"):
        load_data(str(path))


def test_not_npz_regular_file(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="neither a .npz file, a .csv list of images nor a folder"):
        load_data(str(path))


def test_empty_npz_is_a_data_error(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="cannot be read as .npz"):
        load_data(str(path))


def test_npy_named_npz_is_a_data_error(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="single .npy array, not a .npz archive"):
        load_data(str(path))


# --- image folders ---------------------------------------------------------------------------------------

def _image_folder(root, classes=("cat", "dog"), per_class: int = 12, size: int = 10):
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in classes:
        (root / name).mkdir()
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def test_image_folder(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ds = load_data(str(root))
    assert ds.class_names == ("cat", "dog") and ds.describe()["class_names"] == ["cat", "dog"]
    assert ds.num_classes == 2
    assert ds.input_shape == (1, 10, 10)
    assert _sizes(ds) == 24
    _check_consistent(ds)


def test_image_folder_resolution(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    assert load_data(str(root), resolution=8).input_shape == (1, 8, 8)


def test_image_folder_corrupt_png(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: cannot be read as an image"):
        load_data(str(root))


def test_image_folder_single_class(tmp_path):
    root = _image_folder(tmp_path / "imgs", classes=("only",))
    with pytest.raises(DataError, match="found 1 class folders"):
        load_data(str(root))


def test_image_folder_without_images(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="found 2 class folders and 0 images"):
        load_data(str(root))


def test_a_folder_of_unread_image_kinds_names_what_it_holds(tmp_path):
    """A folder of GIFs was said to hold "10 class folders and 0 images", and nothing of its 400 .gif files."""
    root = tmp_path / "gifs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.gif").write_bytes(b"GIF89a")
    (root / "a" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match=r"gifs: found 2 class folders and 0 images \(6 .gif files, which are not "
                                        r"read\); use one sub-folder per class .* \(convert the images to PNG or "
                                        r"JPEG\)"):
        load_data(str(root))


def test_data_too_small_to_split_is_named_by_its_path(tmp_path, monkeypatch):
    """Every other data error names the path given (ds/one:); this one named the folder alone (one:)."""
    _image_folder(tmp_path / "ds" / "one", classes=("a", "b", "c"), per_class=1)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^ds/one: 3 images are too few to split"):
        load_data("ds/one")


def test_npz_splits_of_different_shapes_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "splits.npz"
    np.savez(path, x_train=rng.random((40, 8, 8), dtype=np.float32), y_train=np.arange(40) % 4,
             x_test=rng.random((12, 10, 10), dtype=np.float32), y_test=np.arange(12) % 4)
    with pytest.raises(DataError, match="differ in shape"):
        load_data(str(path))
    assert load_data(str(path), resolution=8).input_shape == (1, 8, 8)


# --- input preprocessing: recorded, reproducible, chosen --------------------------------------------------

def _rows(ds) -> np.ndarray:
    return np.concatenate([ds.x_train, ds.x_val, ds.x_test])


def _as_deployed(pre: dict, raw: np.ndarray) -> np.ndarray:
    """What a deployment pipeline computes from the recorded recipe alone (raw already resized, CHW)."""
    mean = np.asarray(pre["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(pre["std"], np.float32).reshape(-1, 1, 1)
    return (raw.astype(np.float32) * np.float32(pre["scale"]) - mean) / std


def _holds(ds, image: np.ndarray) -> bool:
    return bool(np.isclose(_rows(ds), image[None], atol=1e-5).all(axis=(1, 2, 3)).any())


def test_recorded_preprocess_reproduces_the_model_input_from_raw_pixels(tmp_path):
    from PIL import Image

    x, y = _xy()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    ds = load_data(str(tmp_path / "data.npz"))
    pre = ds.describe()["preprocess"]
    assert pre["scale"] == pytest.approx(1 / 255) and pre["resize"] is None and pre["channels"] == "as stored"
    assert _holds(ds, _as_deployed(pre, x[7][None]))
    root = _image_folder(tmp_path / "imgs")
    ds = load_data(str(root), resolution=8)
    pre = ds.describe()["preprocess"]
    assert (pre["channels"], pre["resize"]) == ("grayscale", 8) and pre["resize_method"].startswith("PIL BICUBIC")
    with Image.open(root / "dog" / "03.png") as img:
        raw = np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BICUBIC))
    assert _holds(ds, _as_deployed(pre, raw[None]))
    digits = load_data("digits").describe()["preprocess"]
    assert digits["scale"] == 1 / 16 and digits["resize"] == 32 and digits["resize_method"].startswith("bilinear")


def test_given_splits_are_standardised_with_training_statistics_only(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "split.npz", x_train=x[:160], y_train=y[:160], x_test=x[160:] // 2, y_test=y[160:])
    ds = load_data(str(tmp_path / "split.npz"))
    assert abs(float(ds.x_train.mean())) < 1e-4 and float(ds.x_test.mean()) < -0.5  # the test images are darker


@pytest.mark.parametrize("source", ["digits", "xy.npz", "flat"])
def test_one_pool_of_images_is_split_before_its_statistics_are_taken(source, tmp_path):
    """digits, an x/y npz and a folder of class folders are split by edgekd: mean and std come from the
    training part alone, so the test images do not shape the preprocessing they are scored through."""
    from PIL import Image

    x, y = _xy()
    x[y == 3] //= 4  # one class darker, so that the parts' statistics differ
    if source == "xy.npz":
        np.savez(tmp_path / "xy.npz", x=x, y=y)
        source = str(tmp_path / "xy.npz")
    elif source == "flat":
        for i, (img, label) in enumerate(zip(x, y)):
            (tmp_path / "flat" / f"c{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(tmp_path / "flat" / f"c{label}" / f"{i:03d}.png")
        source = str(tmp_path / "flat")
    ds = load_data(source)
    pre = ds.describe()["preprocess"]
    assert abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-4
    everything = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert abs(float(everything.mean())) > 1e-3  # the other parts were not in the statistics
    assert pre["std"][0] > 0 and len(pre["mean"]) == 1


def test_normalize_none_and_per_channel_values(tmp_path):
    ds = load_data("digits", normalize="none")
    assert ds.x_train.min() == 0 and ds.x_train.max() == pytest.approx(1.0)
    assert ds.describe()["preprocess"]["mean"] == [0.0] and ds.describe()["preprocess"]["std"] == [1.0]
    rgb = np.random.default_rng(0).integers(0, 256, size=(60, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=rgb, y=np.arange(60) % 3)
    ds = load_data(str(tmp_path / "rgb.npz"), normalize="0.485,0.456,0.406/0.229,0.224,0.225")
    pre = ds.describe()["preprocess"]
    assert pre["mean"] == [0.485, 0.456, 0.406] and ds.input_shape == (3, 6, 6)
    assert _holds(ds, _as_deployed(pre, rgb[11].transpose(2, 0, 1)))
    # A recorded Preprocess (as a manifest holds it) applies those numbers, not the data's own.
    from edgekd.data import Preprocess

    again = load_data("digits", normalize=Preprocess.from_dict(load_data("digits").describe()["preprocess"]))
    assert np.array_equal(again.x_test, load_data("digits").x_test)


@pytest.mark.parametrize("spec, message", [
    ("imagenet", "is not dataset, none or MEAN/STD"),
    ("0.5/0", "not positive and finite"),
    ("0.5/-1", "not positive and finite"),
    ("0.5,0.5/0.2,0.2", "gives 2 mean values for the 1-channel images"),
])
def test_bad_normalize_specs(spec, message):
    with pytest.raises(DataError, match=message):
        load_data("digits", normalize=spec)


def test_image_folder_skips_hidden_folders_and_refuses_empty_classes(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "cat" / "._00.png").write_bytes(b"macOS resource fork, not an image")
    ds = load_data(str(root))
    assert ds.class_names == ("cat", "dog") and _sizes(ds) == 24
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("no images yet")
    with pytest.raises(DataError, match="class folder 'bird' holds no .png/.jpg/.bmp/.tif/.webp images"):
        load_data(str(root))


def test_a_test_set_alone_is_all_test_split(tmp_path):
    x, y = _xy()
    np.savez(tmp_path / "test.npz", x_test=x, y_test=y)
    ds = load_data(str(tmp_path / "test.npz"))
    assert len(ds.y_test) == 200 and len(ds.y_train) == len(ds.y_val) == 0
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 4
    assert ds.describe()["preprocess"]["scale"] == pytest.approx(1 / 255)
    np.savez(tmp_path / "empty.npz", x_test=x[:0], y_test=y[:0])
    with pytest.raises(DataError, match="x_test holds no images"):
        load_data(str(tmp_path / "empty.npz"))


# --- --channels: what a teacher trained on other channels takes ----------------------------------------------

def test_grayscale_repeated_to_rgb_is_recorded_and_reproducible(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    ds = load_data(str(root), channels=3, normalize="0.485,0.456,0.406/0.229,0.224,0.225")
    pre = ds.describe()["preprocess"]
    assert ds.input_shape == (3, 10, 10) and pre["to_channels"] == 3 and pre["channels"] == "grayscale"
    from PIL import Image

    with Image.open(root / "cat" / "05.png") as img:
        raw = np.asarray(img.convert("L"))
    assert _holds(ds, _as_deployed(pre, np.repeat(raw[None], 3, axis=0)))
    # Applied again from the record alone (as gate and validate do), even under an explicit normalisation.
    from edgekd.data import Preprocess

    again = load_data(str(root), normalize=Preprocess.from_dict(pre))
    assert np.array_equal(again.x_test, ds.x_test)
    assert load_data(str(root), normalize="none", channels=Preprocess.from_dict(pre).to_channels).input_shape[0] == 3


def test_rgb_to_luminance_matches_pil(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    root = tmp_path / "rgb"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    ds = load_data(str(root), channels=1, normalize="none")
    assert ds.input_shape == (1, 6, 6) and ds.describe()["preprocess"]["to_channels"] == 1
    with Image.open(root / "b" / "4.png") as img:
        pil = np.asarray(img.convert("L")).astype(np.float32) / 255
    nearest = np.abs(_rows(ds) - pil[None, None]).max(axis=(1, 2, 3)).min()
    assert nearest <= 0.5 / 255 + 1e-6  # PIL rounds to whole grey levels; the weights are the same


def test_data_already_in_the_asked_channels_records_no_conversion():
    ds = load_data("digits", resolution=8, channels=1)
    assert "to_channels" not in ds.describe()["preprocess"]
    assert np.array_equal(ds.x_test, load_data("digits", resolution=8).x_test)


def test_bad_channel_requests_are_refused(tmp_path):
    with pytest.raises(DataError, match="--channels 2 is not 1 or 3; pass --channels 3"):
        load_data("digits", channels=2)
    with pytest.raises(DataError, match="--channels rgb is not 1 or 3; pass --channels 3"):
        load_data("digits", channels="rgb")
    # the string CompressConfig and the CLI take is a count here too (it was refused as "--channels 3 is not 1 or 3")
    assert load_data("digits", resolution=8, channels="3").input_shape == (3, 8, 8)
    four = np.zeros((30, 4, 5, 5), np.uint8)
    np.savez(tmp_path / "rgba.npz", x=four, y=np.arange(30) % 2)
    with pytest.raises(DataError, match="--channels 1 cannot convert 4-channel images"):
        load_data(str(tmp_path / "rgba.npz"), channels=1)


# --- image depth and formats ------------------------------------------------------------------------------

def _write(root, name, i, pixels, suffix=".png"):
    from PIL import Image

    (root / name).mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / name / f"{i:02d}{suffix}")


def test_16_bit_grayscale_is_read_at_full_depth(tmp_path):
    rng = np.random.default_rng(0)
    raw = {}
    for c in ("a", "b"):
        for i in range(10):
            raw[c, i] = rng.integers(1000, 60000, size=(6, 6), dtype=np.uint16)
            _write(tmp_path / "xray", c, i, raw[c, i])
    ds = load_data(str(tmp_path / "xray"), normalize="none")
    pre = ds.describe()["preprocess"]
    assert pre["scale"] == pytest.approx(1 / 65535) and pre["channels"] == "grayscale"
    # Pillow's own 8-bit conversion would clip all of these to 255: nearly white, the digits lost.
    assert 0.3 < float(ds.x_train.mean()) < 0.6
    assert _holds(ds, _as_deployed(pre, raw["b", 3][None]))


def test_16_bit_mixed_with_8_bit_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        _write(tmp_path / "mix", "a", i, rng.integers(0, 60000, size=(5, 5), dtype=np.uint16))
        _write(tmp_path / "mix", "b", i, rng.integers(0, 255, size=(5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"mixes 16-bit grayscale with 8-bit images \(e\.g\. .*b/00\.png\)"):
        load_data(str(tmp_path / "mix"))


def test_float_images_are_refused(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            _write(tmp_path / "floats", c, i, np.full((5, 5), 0.5, np.float32), ".tif")
    with pytest.raises(DataError, match="holds floating-point pixels; store 8- or 16-bit images"):
        load_data(str(tmp_path / "floats"))


def test_bmp_tiff_and_webp_are_images_too(tmp_path):
    rng = np.random.default_rng(0)
    for c, suffix in (("a", ".bmp"), ("b", ".tif"), ("c", ".webp")):
        for i in range(6):
            _write(tmp_path / "kinds", c, i, rng.integers(0, 255, size=(7, 7), dtype=np.uint8), suffix)
    ds = load_data(str(tmp_path / "kinds"))
    assert ds.class_names == ("a", "b", "c") and _sizes(ds) == 18


@pytest.mark.parametrize("labels, message, fix", [
    (lambda n: np.arange(n) % 3 + 1, r"no training image has label 0; labels run 0\.\.3", "subtract 1 from every"),
    (lambda n: np.array([0, 1, 4])[np.arange(n) % 3], r"no training image has label 2 \(2 labels unused\)",
     "number the classes 0..K-1"),
])
def test_labels_that_leave_a_class_out_are_refused(tmp_path, labels, message, fix):
    x = np.zeros((30, 1, 4, 4), np.float32)
    np.savez(tmp_path / "x_y.npz", x=x, y=labels(30))
    np.savez(tmp_path / "splits.npz", x_train=x, y_train=labels(30), x_test=x[:6], y_test=labels(6))
    for name in ("x_y.npz", "splits.npz"):
        with pytest.raises(DataError, match=message) as err:
            load_data(str(tmp_path / name))
        assert fix in str(err.value)


def test_a_test_set_alone_may_leave_classes_out(tmp_path):
    np.savez(tmp_path / "test.npz", x_test=np.zeros((6, 1, 4, 4), np.float32), y_test=np.array([0, 2] * 3))
    assert load_data(str(tmp_path / "test.npz")).num_classes == 3


# --- class names of a .npz --------------------------------------------------------------------------------

def test_npz_class_names_name_the_outputs(tmp_path):
    x = np.zeros((30, 1, 4, 4), np.float32)
    y = np.arange(30) % 3
    np.savez(tmp_path / "named.npz", x=x, y=y, class_names=np.array(["cat", "dog", "owl"]))
    ds = load_data(str(tmp_path / "named.npz"))
    assert ds.class_names == ("cat", "dog", "owl") and ds.describe()["class_names"] == ["cat", "dog", "owl"]
    np.savez(tmp_path / "bytes.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6],
             class_names=np.array([b"cat", b"dog", b"owl", b"eel"]))
    with pytest.raises(DataError, match="no training image has label 3"):  # a named class with no images
        load_data(str(tmp_path / "bytes.npz"))
    np.savez(tmp_path / "test.npz", x_test=x[:6], y_test=y[:6], class_names=np.array([b"cat", b"dog", b"owl", b"eel"]))
    assert load_data(str(tmp_path / "test.npz")).class_names == ("cat", "dog", "owl", "eel")


@pytest.mark.parametrize("names, message", [
    (np.array(["cat", "dog"]), "class_names names 2 classes, but the labels run to 2"),
    (np.array(["cat", "cat", "owl"]), "class_names repeats a name"),
    (np.array([0, 1, 2]), r"class_names is not a list of strings \(shape \(3,\), dtype int64\)"),
])
def test_npz_class_names_that_do_not_fit_are_refused(tmp_path, names, message):
    np.savez(tmp_path / "bad.npz", x=np.zeros((30, 1, 4, 4), np.float32), y=np.arange(30) % 3, class_names=names)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "bad.npz"))


def test_npz_object_arrays_are_refused_not_unpickled(tmp_path):
    np.savez(tmp_path / "objects.npz", x=np.zeros((30, 1, 4, 4), np.float32), y=np.arange(30) % 3,
             class_names=np.array(["cat", None, "owl"], dtype=object))
    with pytest.raises(DataError, match="array 'class_names' holds Python objects, which edgekd does not unpickle"):
        load_data(str(tmp_path / "objects.npz"))


def test_labels_for_matches_named_classes_only():
    from dataclasses import replace

    from edgekd.data_match import labels_for

    ds = load_data("digits", resolution=8)
    words = tuple("abcdefghij")
    assert labels_for(ds, None) is ds.y_test and labels_for(ds, words) is ds.y_test  # numbered data: as stored
    named = replace(ds, class_names=tuple("jihgfedcba"))
    assert np.array_equal(labels_for(named, words), 9 - ds.y_test)  # by name
    assert labels_for(named, tuple(str(i) for i in range(10))) is named.y_test  # a numbered model: by position
    with pytest.raises(DataError, match="has class 'j', which the model does not predict"):
        labels_for(named, tuple("abcdefghi"))


def test_class_names_with_control_characters_stay_on_one_line_of_a_message():
    from dataclasses import replace

    from edgekd.data_match import labels_for, with_class_order_note

    ds = load_data("digits", resolution=8)
    odd = replace(ds, class_names=("zero\x1b[31m", "one\x0c", "two\nlines", *"3456789"))
    with pytest.raises(DataError) as exc:
        labels_for(odd, ("two\nlines", *"abcdefghi"))
    said = str(exc.value)
    assert "has class 'zero\\x1b[31m'" in said and "(its classes: two\\nlines, a, b" in said, said
    assert not any(c in said for c in "\n\x1b\x0c")
    note = with_class_order_note(odd, None).notes[-1]
    assert "names its own (zero\\x1b[31m, one\\x0c, two\\nlines, 3, ...)" in note, note


def test_classes_named_by_number_are_matched_by_number_not_by_text_order():
    """Eleven class folders 0..10 sort as text (0, 1, 10, 2, ...), as torchvision's ImageFolder numbers them;
    numeric labels count. Folder "10" is class 10 either way, and nothing needs a warning."""
    from dataclasses import replace

    from edgekd.data_match import labels_for, with_class_order_note

    ds = load_data("digits", resolution=8)
    ds = replace(ds, y_test=np.arange(11) % 10)  # eleven test images, of every label the split has
    numbered = tuple(str(i) for i in range(11))
    as_text = tuple(sorted(numbered))  # 0, 1, 10, 2, ..., 9
    folders = replace(ds, class_names=as_text, y_test=np.arange(11))  # folder i in text order
    assert labels_for(folders, numbered).tolist() == [int(n) for n in as_text]
    assert with_class_order_note(folders, numbered).notes == ()
    csv = replace(ds, class_names=numbered, y_test=np.arange(11))  # numeric labels: 10 means class 10
    assert labels_for(csv, as_text).tolist() == [as_text.index(str(i)) for i in range(11)]
    assert labels_for(folders, as_text) is folders.y_test
    with pytest.raises(DataError, match="has class '10', which the model does not predict"):
        labels_for(folders, tuple(str(i) for i in range(10)) + ("11",))


def test_a_model_without_class_names_scored_on_named_classes_is_warned_about():
    from dataclasses import replace

    from edgekd.data_match import with_class_order_note

    ds = load_data("digits", resolution=8)
    assert with_class_order_note(ds, None).notes == ()  # numbered labels: as stored
    named = replace(ds, class_names=tuple("abcdefghij"))
    (note,) = with_class_order_note(named, None).notes
    assert note.startswith("the model records no class names and data 'digits' names its own (a, b, c, d, ...)")
    assert with_class_order_note(named, tuple("abcdefghij")).notes == ()  # matched by name


def test_x_and_y_beside_x_test_and_y_test_train_and_the_test_images_given_are_measured(tmp_path):
    """Keras hands data over as (x, y), (x_test, y_test): the test images were once split away and ignored."""
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 8, 8)).astype(np.float32), np.arange(60) % 3
    np.savez(tmp_path / "k.npz", x=x, y=y, x_test=x[:7], y_test=y[:7])
    ds = load_data(str(tmp_path / "k.npz"))
    assert len(ds.y_test) == 7 and np.array_equal(ds.y_test, y[:7]) and len(ds.y_train) + len(ds.y_val) == 60


@pytest.mark.parametrize("keys, message", [
    (("x_train", "y_train", "x_val", "x_test", "y_test"), "has x_val but no y_val"),
    (("x_train", "y_train", "y_val", "x_test", "y_test"), "has y_val but no x_val"),
    (("x", "y", "x_test"), "has x_test but no y_test"),
    (("x", "y", "x_train", "y_train", "x_test", "y_test"), "has both x and x_train"),
    (("x", "y", "x_val", "y_val"), "has x/y and x_val/y_val but no x_test/y_test"),
])
def test_unpaired_or_mixed_splits_in_an_npz_are_refused(tmp_path, keys, message):
    rng = np.random.default_rng(0)
    arrays = {k: rng.random((12, 8, 8)).astype(np.float32) if k.startswith("x") else np.arange(12) % 2 for k in keys}
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "m.npz"))


@pytest.mark.parametrize("suffix", ["npz", "csv"])
def test_a_label_too_high_to_be_a_class_is_refused_before_any_name_is_made(tmp_path, suffix):
    """An id column taken for the label (1e9) once made a name per number up to it and filled the memory."""
    from PIL import Image

    y = np.array([0, 1, 2, 1_000_000_000] * 3)
    if suffix == "npz":
        np.savez(tmp_path / "d.npz", x=np.zeros((12, 8, 8), np.uint8), y=y)
    else:
        rows = ["path,label"]
        for i, label in enumerate(y):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"{i}.png")
            rows.append(f"{i}.png,{label}")
        (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"has label 1000000000, and labels are class numbers 0\.\.K-1 \(at most "
                                        r"100,000 classes\); check the label column holds classes, not ids"):
        load_data(str(tmp_path / f"d.{suffix}"))


def test_16_bit_arrays_are_scaled_as_16_bit_images_and_other_integers_are_said_to_be_taken_as_stored(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    np.savez(tmp_path / "u16.npz", x=rng.integers(0, 65536, (30, 8, 8)).astype(np.uint16), y=y)
    ds = load_data(str(tmp_path / "u16.npz"), normalize="none")
    assert ds.preprocess.scale == 1 / 65535 and float(ds.x_train.max()) <= 1.0 and ds.notes == ()
    np.savez(tmp_path / "i64.npz", x=rng.integers(0, 256, (30, 8, 8)).astype(np.int64), y=y)  # as pandas gives
    (note,) = load_data(str(tmp_path / "i64.npz"), normalize="none").notes
    assert "images stored as int64 are taken as they are (up to 255), not scaled to [0, 1]" in note
    assert load_data(str(tmp_path / "i64.npz")).notes == ()  # standardised by its own statistics: fine as stored
    np.savez(tmp_path / "i64-test.npz", x_test=rng.integers(0, 256, (9, 8, 8)).astype(np.int64), y_test=y[:9])
    assert len(load_data(str(tmp_path / "i64-test.npz"), normalize="0.5/0.25").notes) == 1


# --- --resolution: one side or height x width --------------------------------------------------------------

@pytest.mark.parametrize("given, hw", [(16, (16, 16)), ("16", (16, 16)), ("12x20", (12, 20)), ("12X20", (12, 20)),
                                       (" 12 x 20 ", (12, 20)), ([12, 20], (12, 20)), ((12, 20), (12, 20)),
                                       (np.int64(9), (9, 9)), (None, None)])
def test_resolution_is_one_side_or_height_by_width(given, hw):
    from edgekd.preprocess import parse_resolution, resolution_value

    assert parse_resolution(given) == hw
    assert resolution_value(hw) == (None if hw is None else hw[0] if hw[0] == hw[1] else hw)


@pytest.mark.parametrize("given", ["abc", "0", "-2", "0x4", "12x", "3x4x5", "12.5", [12], [1, 2, 3], True])
def test_a_resolution_that_is_not_a_size_is_refused_before_any_data_is_read(given):
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--resolution .* is not a positive side or HEIGHTxWIDTH; pass one side "
                                          r"for square images \(e\.g\. 224\) or HEIGHTxWIDTH \(e\.g\. 240x320\)"):
        load_data("no-such-data.npz", resolution=given)


def test_non_square_resolution_resizes_digits_and_npz_and_is_recorded(tmp_path):
    from edgekd.data import Preprocess, describe_preprocess

    ds = load_data("digits", resolution="16x24")
    _check_consistent(ds)
    pre = ds.describe()["preprocess"]
    assert ds.input_shape == (1, 16, 24) and pre["resize"] == [16, 24]
    assert "resized to 16 high x 24 wide (bilinear" in describe_preprocess(pre)
    assert Preprocess.from_dict(pre) == ds.preprocess  # the record reads back as it was written
    x, y = _xy()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    ds = load_data(str(tmp_path / "data.npz"), resolution=(6, 10))
    assert ds.input_shape == (1, 6, 10) and ds.describe()["preprocess"]["resize"] == [6, 10]
    assert load_data("digits", resolution=16).describe()["preprocess"]["resize"] == 16  # square stays one side


def test_an_npz_resized_to_the_other_orientation_is_warned_about(tmp_path):
    x, y = _xy(shape=(12, 20))  # NHW, landscape
    np.savez(tmp_path / "nhw.npz", x=x, y=y)
    assert "stored 12 high x 20 wide, portrait; pass --resolution 12x20" in \
        load_data(str(tmp_path / "nhw.npz"), resolution="20x12").notes[0]
    assert load_data(str(tmp_path / "nhw.npz"), resolution="6x10").notes == ()
    nhwc = np.repeat(x[..., None], 3, axis=-1)  # the same images as NHWC colour, in given splits
    np.savez(tmp_path / "splits.npz", x_train=nhwc[:150], y_train=y[:150], x_test=nhwc[150:], y_test=y[150:])
    assert "pass --resolution 12x20" in load_data(str(tmp_path / "splits.npz"), resolution="20x12").notes[0]
    nchw = x[:, None]
    np.savez(tmp_path / "nchw.npz", x=nchw, y=y)
    assert load_data(str(tmp_path / "nchw.npz"), resolution="20x12").notes
    assert load_data(str(tmp_path / "nchw.npz")).notes == ()


def test_a_non_square_digits_manifest_is_reloaded_at_its_own_height_and_width():
    from edgekd.data import recorded_data

    data = recorded_data({"data": {"name": "digits", "input_shape": [1, 24, 32]}, "recipe": {"data": "digits"}})
    assert load_data(data.source, resolution=data.resolution).input_shape == (1, 24, 32)


# --- values and sizes no model can learn from ---------------------------------------------------------------

def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("arrays, message", [
    (dict(x="nan2", y="y"), r"x holds 2 NaN values \(of 480\)"),
    (dict(x_train="inf1", y_train="y", x_test="ok", y_test="y"), r"x_train holds 1 infinite value \(of 480\)"),
    (dict(x_test="both", y_test="y"), r"x_test holds 1 NaN and 1 infinite values"),
])
def test_nan_or_inf_pixels_are_refused_naming_the_file_key_and_count(tmp_path, arrays, message):
    ok = np.random.default_rng(0).random((30, 1, 4, 4), dtype=np.float32)
    bad = {"ok": ok, "y": np.arange(30) % 3, "nan2": ok.copy(), "inf1": ok.copy(), "both": ok.copy()}
    bad["nan2"][0, 0, 0, :2] = np.nan
    bad["inf1"][3, 0, 1, 1] = np.inf
    bad["both"][1, 0, 0, 0], bad["both"][2, 0, 0, 0] = np.nan, -np.inf
    path = _npz(tmp_path / "bad.npz", **{k: bad[v] for k, v in arrays.items()})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before numpy could warn about NaN statistics
        with pytest.raises(DataError, match=f"bad.npz: {message}.*np.nan_to_num"):
            load_data(path)


def test_an_npz_without_images_says_so(tmp_path):
    path = _npz(tmp_path / "empty.npz", x=np.zeros((0, 1, 4, 4), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=r"empty.npz: x holds no images \(shape \(0, 1, 4, 4\)\)"):
        load_data(path)


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_data_path_is_not_the_current_folder(source):
    with pytest.raises(DataError, match="--data is empty; pass a .npz file, an image folder, or 'digits'"):
        load_data(source)


@pytest.mark.parametrize("resolution, message", [
    (1, "--resolution 1 is too small; pass 4 or more for each side"),
    ("3x24", "--resolution 3x24 is too small"),
    (100000, "--resolution 100000 is too large: edgekd trains at most 4096 pixels a side; pass 4096 or less"),
    ("4097x16", "--resolution 4097x16 is too large"),
])
def test_a_resolution_outside_4_to_4096_is_refused_before_reading(resolution, message):
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_data("missing.npz", resolution=resolution)


def test_images_too_small_as_stored_need_a_resolution_as_the_flag_does(tmp_path):
    path = _npz(tmp_path / "thin.npz", x=np.ones((30, 1, 1, 8), np.float32), y=np.arange(30) % 3)
    with pytest.raises(DataError, match=r"thin.npz: images are 1x8 \(height x width\), too small to use as "
                                        r"stored; pass --resolution"):
        load_data(path)
    assert load_data(path, resolution=8).input_shape == (1, 8, 8)


def test_resizing_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    import edgekd.preprocess

    path = _npz(tmp_path / "d.npz", x=np.ones((30, 1, 4, 4), np.float32), y=np.arange(30) % 3)
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: 100_000)
    with pytest.raises(DataError, match=r"d.npz: 30 images at 64x64 \(height x width, --resolution\) would take"):
        load_data(path, resolution=64)


def test_an_npz_too_large_for_the_memory_available_is_refused_before_it_is_read_whole(tmp_path, monkeypatch):
    """Its arrays become float32 whole, at the size they are stored at, with or without --resolution."""
    import edgekd.preprocess

    path = _npz(tmp_path / "big.npz", x=np.ones((30, 64, 64, 3), np.uint8), y=np.arange(30) % 3)
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: 100_000)
    for resolution in (None, 8):
        with pytest.raises(DataError, match=r"big.npz: 30 images at 64x64 \(height x width, as stored\) would take "
                                            r"about 0.0 GiB.*; store fewer or smaller images in the .npz"):
            load_data(path, resolution=resolution)


def test_seeds_are_whole_numbers_every_generator_takes():
    from edgekd.data import MAX_SEED, check_seed
    from edgekd.errors import ConfigError

    for good in (0, MAX_SEED, np.int64(7)):  # a numpy integer from a Python caller's own generator too
        check_seed(good)
    for bad in (-1, MAX_SEED + 1, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="is not a whole number from 0 to"):
            check_seed(bad)
    # unquoted, "seed 1 is not a whole number" read as if 1 were not one
    with pytest.raises(ConfigError, match=r"^seed '1' is not a whole number from 0 to"):
        load_data((np.zeros((20, 8, 8)), np.arange(20) % 2), seed="1")


# --- arrays already in memory ----------------------------------------------------------------------------


def test_arrays_in_memory_load_as_the_same_npz_would(tmp_path):
    import torch

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (60, 10, 12, 3), dtype=np.uint8)  # channels last, as PIL hands images over
    y = np.arange(60) % 3
    np.savez(tmp_path / "same.npz", x=x, y=y)
    stored = load_data(str(tmp_path / "same.npz"), seed=2)
    for source in ((x, y), {"x": x, "y": y}, (torch.from_numpy(x), torch.from_numpy(y))):
        held = load_data(source, seed=2)
        assert held.name == "arrays" and held.input_shape == stored.input_shape == (3, 10, 12)
        assert np.array_equal(held.x_train, stored.x_train) and np.array_equal(held.y_test, stored.y_test)
        assert held.preprocess == stored.preprocess


def test_tensors_of_a_float_type_numpy_lacks_are_read_as_float32():
    """A bfloat16 tensor (common in current training code) was a raw TypeError from torch's __array__."""
    import torch

    x, y = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32), np.arange(60) % 3
    want = load_data((torch.from_numpy(x).bfloat16().float(), y))
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        got = load_data((torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)))
        assert got.x_train.dtype == np.float32
        assert (np.array_equal(got.x_train, want.x_train) if dtype == torch.bfloat16
                else got.x_train.shape == want.x_train.shape)
        assert np.array_equal(got.y_test, want.y_test)


def test_arrays_in_memory_keep_their_splits_and_names():
    rng = np.random.default_rng(0)
    x, y = rng.random((80, 1, 8, 8)).astype(np.float32), np.arange(80) % 4
    ds = load_data({"x_train": x[:60], "y_train": y[:60], "x_test": x[60:], "y_test": y[60:],
                    "class_names": np.array(["ant", "bee", "cat", "dog"])})
    assert len(ds.y_test) == 20 and ds.class_names == ("ant", "bee", "cat", "dog")


@pytest.mark.parametrize(("source", "message"), [
    ((np.zeros((4, 8, 8)),), "a tuple of 1 items, not \\(x, y\\)"),
    ({"x": [object()] * 4, "y": [0, 1, 0, 1]}, "'x' holds Python objects"),
    ({"images": np.zeros((4, 8, 8)), "labels": np.zeros(4, int)},
     "has arrays \\['images', 'labels'\\], not 'x' and 'y'"),
])
def test_arrays_in_memory_that_are_not_a_dataset_are_refused(source, message):
    with pytest.raises(DataError, match=message):
        load_data(source)


# --- the pixel-scale note (gate/validate measuring a model on data stored another way) -----------------------

def _digits_test_npz(tmp_path, name, pixels):
    """digits' test images stored as ``pixels`` (a function of the 0..16 values), as a test-only .npz."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    path = tmp_path / f"{name}.npz"
    np.savez(path, x_test=pixels(bunch.images), y_test=bunch.target)
    return str(path)


def _noted(source, recorded):
    from edgekd.data_match import with_scale_note

    data = load_data(source, resolution=32, normalize=recorded, channels=recorded.to_channels)
    return with_scale_note(data, recorded).notes


def test_test_images_that_scale_to_the_training_range_are_not_warned_and_others_are(tmp_path, digits):
    """A model trained on digits (0..16, / 16: pixels in [0, 1]) measured on the same images stored as uint8
    0..255 (/ 255) or as floats in [0, 1] sees its own pixels; only floats 0..16 (taken as stored) do not."""
    recorded = digits.preprocess
    assert recorded.scale == 1 / 16
    as_uint8 = _digits_test_npz(tmp_path, "uint8", lambda x: np.round(x * 255 / 16).astype(np.uint8))
    as_unit = _digits_test_npz(tmp_path, "unit", lambda x: (x / 16).astype(np.float32))
    as_stored = _digits_test_npz(tmp_path, "float16s", lambda x: x.astype(np.float32))
    assert _noted(as_uint8, recorded) == () and _noted(as_unit, recorded) == ()
    (note,) = _noted(as_stored, recorded)
    assert note.startswith("the model was trained on pixels scaled as pixel / 16 (into [0, 1]) and data "
                           "'float16s.npz' is scaled as pixel (its storage type), which puts its pixels up to 16")
    assert note.endswith("this accuracy is not the model's; store the test images as uint8 0..255 or as floats in "
                         "[0, 1]")
    too_small = _digits_test_npz(tmp_path, "u16", lambda x: np.round(x * 255 / 16).astype(np.uint16))
    (note,) = _noted(too_small, recorded)  # 8-bit values in uint16 are divided by 65535: all but black
    assert "scaled as pixel / 65535 (its storage type), which puts its pixels up to 0.00389" in note


def test_dark_test_images_of_the_training_images_depth_are_not_warned(tmp_path):
    """8-bit on both sides is [0, 1] on both sides: a dark test set (top 50 of 255) was told to store itself
    as uint8, which it was."""
    from edgekd.data import Preprocess

    eight_bit = Preprocess(1 / 255, (0.3,), (0.3,), "8-bit")
    dark = _digits_test_npz(tmp_path, "dark", lambda x: np.round(x * 50 / 16).astype(np.uint8))
    assert _noted(dark, eight_bit) == ()


def test_a_model_trained_on_floats_as_stored_is_warned_by_the_recorded_mean_and_std(tmp_path):
    """Floats taken as stored record scale 1 and no range: the mean and std say where the pixels lay."""
    from edgekd.data import Preprocess

    unit = Preprocess(1.0, (0.3057,), (0.324,), "as stored")  # trained on floats in [0, 1]
    wide = Preprocess(1.0, (78.0,), (82.6,), "as stored")  # trained on floats 0..255
    as_uint8 = _digits_test_npz(tmp_path, "uint8", lambda x: np.round(x * 255 / 16).astype(np.uint8))
    as_wide = _digits_test_npz(tmp_path, "wide", lambda x: (x * 255 / 16).astype(np.float32))
    assert _noted(as_uint8, unit) == () and _noted(as_wide, wide) == ()
    (note,) = _noted(as_wide, unit)
    assert "trained on pixels scaled as pixel (their mean + std: 0.63) and data 'wide.npz' is scaled as pixel" in note
    (note,) = _noted(as_uint8, wide)
    assert "trained on pixels scaled as pixel (their mean + std: 161) and data 'uint8.npz' is scaled as pixel / 255" \
        in note
    none = Preprocess(1.0, (0.0,), (1.0,), "as stored")  # --normalize none on floats: their range is not known
    assert _noted(as_wide, none) == () and _noted(as_uint8, none) == ()


def test_the_split_fingerprint_follows_the_images_a_seeded_split_was_dealt_from(tmp_path):
    from edgekd.data import load_arrays, split_fingerprint
    from edgekd.onnx_metadata import SPLIT_DATA_KEY, embedded_split_data

    x, y = np.random.default_rng(0).random((60, 8, 8)), np.arange(60) % 3
    dealt = split_fingerprint(load_arrays((x, y)))
    assert dealt == split_fingerprint(load_arrays((x, y), seed=5))  # the data, not the seed (recorded apart)
    assert split_fingerprint(load_arrays((x[:59], y[:59])))["images"] == 59 and dealt["images"] == 60
    assert split_fingerprint(load_arrays((x[1:], y[1:])))["digest"] != dealt["digest"]
    given = {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:]}
    assert split_fingerprint(load_arrays(given)) is None  # its test split is its own, whatever is added
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])])
    for n, (value, read) in enumerate((('{"images": 60, "digest": "ab"}', {"images": 60, "digest": "ab"}),
                                       ("not json", None),
                        ('{"images": 60}', None), ('{"images": "60", "digest": "ab"}', None),
                        ('{"images": null, "digest": "ab"}', None), ('{"images": 60.5, "digest": "ab"}', None),
                        ('{"images": true, "digest": "ab"}', None), ('{"images": 60, "digest": 7}', None),
                        ('[60, "ab"]', None))):
        model = helper.make_model(graph)
        helper.set_model_props(model, {SPLIT_DATA_KEY: value})
        onnx.save(model, tmp_path / f"m{n}.onnx")  # a file each: metadata is cached by the file's stat
        assert embedded_split_data(tmp_path / f"m{n}.onnx") == read, value


def test_validation_carved_from_given_training_arrays_leaves_every_class_to_train():
    """A class of one training image went to validation whole on some seeds: "no training image has label 2"."""
    rng = np.random.default_rng(0)
    y_train = np.array([0] * 20 + [1] * 20 + [2])
    arrays = {"x_train": rng.integers(0, 255, (41, 8, 8), dtype=np.uint8), "y_train": y_train,
              "x_test": rng.integers(0, 255, (6, 8, 8), dtype=np.uint8), "y_test": np.arange(6) % 3}
    for seed in range(8):
        ds = load_arrays(arrays, seed=seed)
        assert np.bincount(ds.y_train).tolist() == [18, 18, 1] and np.bincount(ds.y_val).tolist() == [2, 2]


def test_npz_class_names_and_labels_are_compared_in_one_unicode_form(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "café")
    ds = load_arrays({"x": np.zeros((20, 8, 8), np.float32), "y": np.array([nfd, "café", "thé", "thé"] * 5),
                      "class_names": np.array(["café", "thé"])})
    assert ds.class_names == ("café", "thé") and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 20


def test_a_numbered_test_set_from_one_is_matched_by_the_numbers_it_has():
    """Labels 1..3 alone number classes 0..3: a model of classes "1".."3" predicts each of those it has; one
    that records no names takes the numbers as its outputs."""
    from edgekd.data_match import labels_for, present_classes

    ds = load_arrays({"x_test": np.zeros((6, 8, 8), np.float32), "y_test": np.array([1, 2, 3, 3, 2, 1])})
    assert ds.class_names == ("0", "1", "2", "3")
    matched = present_classes(ds, ("1", "2", "3"))
    assert matched.class_names == ("1", "2", "3") and matched.num_classes == 3
    assert labels_for(ds, ("1", "2", "3")).tolist() == [0, 1, 2, 2, 1, 0]
    assert labels_for(ds, ("0", "1", "2", "3")).tolist() == [1, 2, 3, 3, 2, 1]
    assert present_classes(ds, None) is ds and labels_for(ds, None).tolist() == [1, 2, 3, 3, 2, 1]


def test_a_model_that_read_its_images_as_rgb_gets_grayscale_test_images_repeated_as_training_did(tmp_path):
    """One colour file reads a whole folder as RGB: its grayscale images were repeated to 3 channels."""
    from edgekd.data import Preprocess

    path = _npz(tmp_path / "gray.npz", x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.arange(4) % 2)
    assert load_data(path, normalize=Preprocess(1 / 255, (0.5,), (0.25,), "rgb")).input_shape == (3, 8, 8)
    assert load_data(path, normalize=Preprocess(1 / 255, (0.5,), (0.25,), "as stored")).input_shape == (1, 8, 8)


def test_the_matching_helpers_are_still_importable_from_edgekd_data():
    import edgekd.data
    from edgekd import data_match
    from edgekd.data import labels_for, with_class_order_note, with_scale_note

    assert (labels_for, with_class_order_note, with_scale_note) == (
        data_match.labels_for, data_match.with_class_order_note, data_match.with_scale_note)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        edgekd.data.nothing  # noqa: B018


def test_arrays_as_a_list_are_read_and_other_objects_are_refused_by_their_type():
    """load_data([x, y]) failed in pathlib, and load_data(x) on numpy's 'truth value is ambiguous'."""
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), dtype=np.float32), np.arange(40) % 2
    assert len(load_data([x, y]).y_train) == len(load_data((x, y)).y_train)
    for wrong in (x, 3, object()):
        with pytest.raises(DataError, match=f"data of type {type(wrong).__name__} is neither a path nor arrays"):
            load_data(wrong)


# --- memory while loading --------------------------------------------------------------------------------


def _load_peak(source, **kw):
    import tracemalloc

    tracemalloc.start()
    try:
        ds = load_data(source, **kw)
        return ds, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("splits", ["x/y", "x_train/x_test"])
def test_an_npz_loads_holding_its_images_about_twice_not_four_times(tmp_path, splits):
    """A 50,000-image .npz peaked at 4x its float32 images (a copy per astype, division, layout, split cut
    and normalisation), so check_memory refused data that fits: now the stored array, one float32 copy and
    numpy's std of the training part, under MEMORY_FACTOR."""
    import edgekd.preprocess
    from edgekd.data import split_indices

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (3000, 16, 16, 3), dtype=np.uint8), np.arange(3000) % 5
    keys = {"x": x, "y": y} if splits == "x/y" else {"x_train": x[:2400], "y_train": y[:2400], "x_test": x[2400:],
                                                     "y_test": y[2400:]}
    np.savez(tmp_path / "big.npz", **keys)
    ds, peak = _load_peak(str(tmp_path / "big.npz"), seed=3)
    final = x.size * 4
    assert peak < 2.3 * final <= edgekd.preprocess.MEMORY_FACTOR * final
    if splits == "x/y":  # the same values, to the bit, as normalising the whole then cutting copies gave
        xf = x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        sel = split_indices("big.npz", y, 3)
        m, s = np.float32(xf[sel["train"]].mean()), np.float32(xf[sel["train"]].std())
        assert ds.preprocess.mean == (float(m),) and ds.preprocess.std == (float(s),)
        for part, got in (("train", ds.x_train), ("val", ds.x_val), ("test", ds.x_test)):
            assert np.array_equal(got, ((xf - m) / s)[sel[part]]) and got.flags.c_contiguous


def test_arrays_a_caller_holds_are_never_normalised_in_place():
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8)).astype(np.float32), np.arange(40) % 2
    kept = x.copy()
    load_data((x, y))
    load_data({"x_train": x[:30], "y_train": y[:30], "x_test": x[30:], "y_test": y[30:]})
    load_data({"x_test": x, "y_test": y})
    assert np.array_equal(x, kept)


def test_normalising_in_place_gives_what_a_copy_does():
    from edgekd.preprocess import apply_normalization

    x = np.random.default_rng(0).random((6, 3, 4, 4)).astype(np.float32)
    copied = apply_normalization(x, (0.1, 0.2, 0.3), (0.5,))
    assert copied is not x and copied.dtype == np.float32
    same = apply_normalization(x, (0.1, 0.2, 0.3), (0.5,), in_place=True)
    assert same is x and np.array_equal(same, copied)


@pytest.mark.parametrize("dims, size", [
    ([1, 3, 32, 32], ((32, 32), 3, False)),
    ([1, 32, 32, 3], ((32, 32), 3, True)),
    ([1, 16, 16, 4], ((16, 16), 4, True)),  # RGBA channels-last: was read as NCHW 16x4 images
    (["n", "c", 32, 32], ((32, 32), None, False)),
    (["n", 3, "h", "w"], None),
    (["n", "h", "w", 3], None),
    ([1, 64], None),
])
def test_the_size_a_model_fixes_is_read_in_its_layout(dims, size):
    from edgekd.preprocess import model_image_size

    assert model_image_size(dims) == size


def test_a_manifest_s_data_is_found_where_compress_read_it_and_only_while_unchanged(tmp_path, monkeypatch):
    from edgekd.data import data_source, recorded_data

    ran, elsewhere = tmp_path / "ran", tmp_path / "elsewhere"
    ran.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(ran)
    np.savez("d.npz", x=np.zeros((4, 1, 2, 2)), y=np.arange(4))
    manifest = {"data": {"name": "d.npz", "source": data_source("d.npz")}, "recipe": {"data": "d.npz"}}
    assert manifest["data"]["source"]["path"] == str(ran / "d.npz")  # resolved, the recipe keeps it as typed
    monkeypatch.chdir(elsewhere)
    assert recorded_data(manifest).source == str(ran / "d.npz")  # not from the folder gate runs in
    # a same-named file where gate runs is not the run's data; the run's own, replaced, is said to have changed
    np.savez("d.npz", x=np.ones((4, 1, 2, 2)), y=np.arange(4))
    np.savez(ran / "d.npz", x=np.ones((4, 1, 2, 2)), y=np.arange(4))
    own = recorded_data(manifest)
    assert own.source is None and own.named == str(ran / "d.npz") and own.missing.startswith("has changed since")
    (ran / "d.npz").unlink()
    assert recorded_data(manifest).missing == "is not here"
    # written before the resolved path was recorded: a relative one named a folder the manifest does not say
    older = recorded_data({"data": {"name": "d.npz"}, "recipe": {"data": "d.npz"}})
    assert older.source is None and "relative to the folder compress ran in" in older.missing


def test_a_data_folder_s_digest_is_of_its_file_names_and_sizes(tmp_path):
    from edgekd.data import data_source

    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        (tmp_path / "imgs" / name / "a.png").write_bytes(b"12")
    before = data_source(str(tmp_path / "imgs"))
    assert before["sha256_of"] == "the image files' names and sizes"
    (tmp_path / "imgs" / "cat" / "a.png").write_bytes(b"123")
    assert data_source(str(tmp_path / "imgs"))["sha256"] != before["sha256"]
    assert data_source("digits") is None and data_source(str(tmp_path / "none.npz")) is None


def test_a_data_folder_s_digest_covers_the_images_read_through_linked_folders_and_nothing_skipped(tmp_path):
    """What gate and validate --manifest tell a changed folder by: a .DS_Store (Finder's), notes or a hidden
    folder, which loading skips, changed it (gate refused the run's own data); class folders linked in from
    elsewhere were not followed (the digest of nothing, whatever images they held)."""
    import os

    from edgekd.data import LISTED, WALKED, data_digest, recorded_data

    real = _image_folder(tmp_path / "real", per_class=3)
    digest = data_digest(real)
    (real / "cat" / ".DS_Store").write_bytes(b"x")
    (real / "dog" / "notes.txt").write_text("x")
    (real / ".ipynb_checkpoints").mkdir()
    assert data_digest(real) == digest
    links, other = tmp_path / "links", _image_folder(tmp_path / "other", per_class=4)
    links.mkdir()
    for name in ("cat", "dog"):
        os.symlink(real / name, links / name)
    assert data_digest(links) == digest  # the same images, as their folders' names list them
    (links / "dog").unlink()
    os.symlink(other / "dog", links / "dog")
    assert data_digest(links) != digest
    # a manifest written before: its digest of every file walked is still checked as it was made, and where the
    # folder held images alone then, files the loader skips added since are no change either
    recorded = {"recipe": {"data": str(real)}, "data": {"source": {"path": str(real), "sha256_of": WALKED,
                                                                   "sha256": data_digest(real, legacy=True)}}}
    assert recorded_data(recorded).source == str(real)
    recorded["data"]["source"].update(sha256="0" * 64)
    assert recorded_data(recorded).missing.startswith("has changed since the run")
    recorded["data"]["source"].update(sha256=digest)  # what the walk made before the .DS_Store came
    assert recorded_data(recorded).source == str(real)
    recorded["data"]["source"].update(sha256_of=LISTED, sha256=data_digest(real, legacy=True))
    assert recorded_data(recorded).missing.startswith("has changed since the run")  # a listing, checked as one
    recorded["data"]["source"].update(sha256=digest)
    assert recorded_data(recorded).source == str(real)


def test_names_that_are_not_utf8_are_hashed_as_their_own_bytes(tmp_path):
    """A file named in cp1252 (from a Windows zip) reaches Python with a lone surrogate, which .encode() refused:
    validate and compress died with a UnicodeEncodeError traceback naming no file. UTF-8 names hash as before."""
    import hashlib
    import os

    from edgekd.data import data_digest, order_digest

    assert order_digest(["a/b.png", "é/c.png"]) == hashlib.sha256("a/b.png\né/c.png\n".encode()).hexdigest()[:16]
    assert order_digest(["cat/\udce9t\udce9.png"]) == hashlib.sha256(b"cat/\xe9t\xe9.png\n").hexdigest()[:16]
    real = _image_folder(tmp_path / "real", per_class=3)
    os.rename(real / "cat" / "00.png", os.fsencode(real / "cat") + b"/\xe9t\xe9.png")
    listed, walked = data_digest(real), data_digest(real, legacy=True)
    assert len(listed) == 64 and listed == walked  # images alone: the listing hashes what the walk does
