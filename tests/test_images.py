"""Image folders in torchvision's split layout (train/, val/, test/ of class folders): splits kept as given."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgekd.data import load_data
from edgekd.errors import DataError


def _images(folder, classes, per_class, shade=0):
    from PIL import Image

    rng = np.random.default_rng(len(str(folder)))
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.integers(0, 200, size=(6, 6)) + shade, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i:02d}.png")


def test_train_val_test_folders_are_the_splits(tmp_path):
    _images(tmp_path / "data" / "train", ("cat", "dog", "owl"), 8)
    _images(tmp_path / "data" / "val", ("cat", "dog", "owl"), 2)
    _images(tmp_path / "data" / "test", ("cat", "dog"), 3, shade=50)  # a test split may lack a class
    ds = load_data(str(tmp_path / "data"))
    assert ds.class_names == ("cat", "dog", "owl")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 6, 6)
    assert sorted(ds.y_test.tolist()) == [0, 0, 0, 1, 1, 1]
    # Standardised with the training images' statistics alone: the brighter test images stay brighter.
    assert abs(float(ds.x_train.mean())) < 1e-4 and float(ds.x_test.mean()) > 0.3


@pytest.mark.parametrize("other, role", [("val", "test"), ("validation", "test"), ("test", "test")])
def test_a_missing_split_is_carved_or_taken_from_the_other(tmp_path, other, role):
    _images(tmp_path / "data" / "train", ("a", "b"), 16)
    _images(tmp_path / "data" / other, ("a", "b"), 4)
    ds = load_data(str(tmp_path / "data"))
    assert len(ds.y_test) == 8  # val/ alone is held out as the test split
    assert (len(ds.y_train), len(ds.y_val)) == (28, 4)  # validation carved from the 32 training images


@pytest.mark.parametrize("layout, message", [
    ({"train": ("a", "b")}, "holds train/ alone, so nothing is held out to test on; add a test/"),
    ({"train": ("a", "b"), "test": ("a", "c")}, "class folder 'c' is not in train/"),
    ({"train": ("a", "b"), "val": ("a",), "valid": ("b",)}, "both 'val' and 'valid' look like the val split"),
    ({"train": ("a",), "test": ("a",)}, r"train: found 1 class folders and 3 images; use one sub-folder per class"),
])
def test_split_layouts_that_do_not_fit_are_refused(tmp_path, layout, message):
    for split, classes in layout.items():
        _images(tmp_path / "data" / split, classes, 3)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "data"))


@pytest.mark.parametrize("loose", [4, 0])
def test_a_split_without_class_folders_is_named_as_such(tmp_path, loose):
    """Kaggle's layout: train/ of class folders beside a test/ of unlabelled images (or an empty test/) was read
    as two classes, and the error said to move train/'s class folders up into it."""
    from PIL import Image

    _images(tmp_path / "data" / "train", ("cat", "dog"), 3)
    (tmp_path / "data" / "test").mkdir()
    for i in range(loose):
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "data" / "test" / f"{i}.png")
    held = f"holds {loose} images but no class folders, so they have no labels" if loose else "holds no class folders"
    with pytest.raises(DataError, match=rf"data/test: the test split {held}; sort its images into class folders "
                                        r"named as the other splits' are, or move test/ out of the data"):
        load_data(str(tmp_path / "data"))


@pytest.mark.parametrize("split", ["test", "val"])
def test_a_held_out_split_alone_may_hold_one_class(tmp_path, split):
    _images(tmp_path / "data" / split, ("cat",), 3)
    ds = load_data(str(tmp_path / "data"))
    assert ds.class_names == ("cat",) and len(ds.y_test) == 3 and len(ds.y_train) == 0


def test_a_palette_image_of_greys_keeps_a_grayscale_set_grayscale(tmp_path):
    from PIL import Image

    _images(tmp_path / "data", ("a", "b"), 6)
    grey = Image.fromarray(np.full((6, 6), 90, np.uint8)).convert("P")  # a grey palette, as optimisers save
    assert grey.mode == "P"
    grey.save(tmp_path / "data" / "a" / "p.png")
    ds = load_data(str(tmp_path / "data"))
    assert ds.input_shape == (1, 6, 6) and ds.preprocess.channels == "grayscale"
    colour = Image.new("RGB", (6, 6), (200, 30, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    colour.save(tmp_path / "data" / "b" / "c.png")
    assert load_data(str(tmp_path / "data")).input_shape == (3, 6, 6)  # a colour palette is colour


def test_classes_named_like_splits_that_hold_images_are_classes(tmp_path):
    _images(tmp_path, ("train", "test"), 10)  # two classes, their images directly inside
    ds = load_data(str(tmp_path))
    assert ds.class_names == ("test", "train") and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 20


def test_images_that_would_not_fit_in_memory_are_refused_before_decoding(tmp_path, monkeypatch):
    import edgekd.preprocess

    _images(tmp_path / "photos", ("a", "b"), 10)
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: 1_000)
    with pytest.raises(DataError, match=r"20 images at 6x6 \(height x width, the first image's size \(no --resolution "
                                        r"given\)\) would "
                                        r"take about 0\.0 GiB of memory.*pass a smaller --resolution"):
        load_data(str(tmp_path / "photos"))
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: None)  # a system that does not say
    assert load_data(str(tmp_path / "photos")).input_shape == (1, 6, 6)


def test_available_memory_is_read_here():
    from edgekd.preprocess import available_memory

    assert available_memory() is None or available_memory() > 0


def test_a_truncated_image_is_named(tmp_path):
    _images(tmp_path / "data", ("a", "b"), 6)
    broken = tmp_path / "data" / "b" / "03.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    with pytest.raises(DataError, match=r"03\.png: cannot be read as an image"):
        load_data(str(tmp_path / "data"))


def test_every_unreadable_image_of_a_pass_is_counted_in_one_error(tmp_path):
    """Only the first broken file was named, and each rerun found the next one after a whole decoding pass."""
    _images(tmp_path / "data", ("a", "b"), 6)
    for name in ("01", "02", "03", "04"):
        broken = tmp_path / "data" / "b" / f"{name}.png"
        broken.write_bytes(broken.read_bytes()[:60])  # truncated: found when decoded
    with pytest.raises(DataError) as caught:
        load_data(str(tmp_path / "data"))
    said = str(caught.value)
    assert said.startswith(f"{tmp_path / 'data'}: 4 of 12 files cannot be read as images: "
                           f"{tmp_path / 'data' / 'b' / '01.png'} (") and "and 1 more" in said, said
    assert "02.png" in said and "04.png" not in said and said.endswith("; remove or replace those files")
    for name in ("00", "05"):  # not images at all: found when the headers are read, before any decoding
        (tmp_path / "data" / "a" / f"{name}.png").write_bytes(b"not a png")
    # ...and counted with those whose pixels are cut short, in the one error: refused at the headers alone, those
    # were found a whole run later, in a second error, while the first one's "2 of 12" read as the whole story
    with pytest.raises(DataError, match=r"data: 6 of 12 files cannot be read as images: .*a/00\.png \(cannot "
                                        r"identify image file.*a/05\.png .*b/01\.png \(image file is truncated\), "
                                        r"and 3 more; remove"):
        load_data(str(tmp_path / "data"))


# --- test/ alone: a held-out test set, its classes matched to a model's by name ----------------------------

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def named_teacher_onnx(teacher, small_data, tmp_path_factory):
    """The trained tiny teacher as an .onnx file whose outputs are named by words, as a folder-trained model's are."""
    import json

    from edgekd.export import ExportRequest, get_exporter
    from edgekd.onnx_metadata import CLASS_NAMES_KEY, stamp_metadata

    out = tmp_path_factory.mktemp("named")
    art = get_exporter("onnx-fp32")(ExportRequest("teacher", "teacher", out, teacher.module, small_data.x_val[:1]))
    stamp_metadata(art, {CLASS_NAMES_KEY: json.dumps(WORDS)})
    return Path(art.path)


def _digit_folder(root, digits):
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for d in digits:
        (root / "test" / WORDS[d]).mkdir(parents=True)
        for i, image in enumerate(bunch.images[bunch.target == d][:15]):
            Image.fromarray((image * 255 / 16).astype(np.uint8)).save(root / "test" / WORDS[d] / f"{i}.png")
    return root


def test_a_test_folder_with_some_classes_is_measured_whole_by_name(named_teacher_onnx, fast_profile_path, tmp_path,
                                                                  run_cli):
    import onnxruntime as ort

    from edgekd.latency.runtime import labels_of_test_split

    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    data = load_data(str(folder), resolution=16)
    assert data.class_names == ("seven", "two") and len(data.y_test) == 30 and not len(data.y_train)
    labels = labels_of_test_split(named_teacher_onnx, data)
    assert sorted(set(labels.tolist())) == [2, 7]  # by name, not the folder's own 0 and 1
    logits = ort.InferenceSession(str(named_teacher_onnx)).run(None, {"input": data.x_test})[0]
    expected = float((logits.argmax(1) == labels).mean())
    assert expected > float((logits.argmax(1) == data.y_test).mean())  # matched by position: wrong
    code, out, err = run_cli("validate", named_teacher_onnx, "--data", folder, "--resolution", "16",
                             "--profile", fast_profile_path)
    assert code == 0 and f"{expected * 100:.2f}%" in out, out + err


def test_a_test_class_the_model_does_not_predict_is_refused(named_teacher_onnx, fast_profile_path, tmp_path,
                                                            run_cli):
    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    (folder / "test" / "seven").rename(folder / "test" / "eleven")
    code, _, err = run_cli("validate", named_teacher_onnx, "--data", folder, "--resolution", "16",
                           "--profile", fast_profile_path)
    assert code == 2 and "has class 'eleven', which the model does not predict (its classes: zero, one" in err


def _pixel_folder(root, classes, per_class=3):
    """4x4 grayscale PNGs in root/<name>/ whose brightest of the first four pixels is ``classes[name]``, as
    conftest's ``pixel_onnx`` scores them: class k by pixel k."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, k in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 150, size=16).astype(np.uint8)
            pixels[k] = 255
            Image.fromarray(pixels.reshape(4, 4)).save(root / name / f"{i}.png")
    return root


def test_numbered_test_folders_are_matched_by_number_without_class_names_as_a_csv_is(tmp_path, fast_profile_path,
                                                                                       run_cli):
    """test/1/ and test/3/ alone were renumbered 0 and 1 by sorted name, and a model recording no class names
    scored them by position (0%, with a warning) where the same images in a CSV scored by number."""
    from conftest import pixel_onnx

    from edgekd.data_match import load_data_for

    folder = _pixel_folder(tmp_path / "numt" / "test", {"1": 1, "3": 3}).parent
    model = pixel_onnx(tmp_path / "m.onnx")
    (tmp_path / "numt.csv").write_text("path,label,split\n" + "".join(
        f"numt/test/{c}/{i}.png,{c},test\n" for c in "13" for i in range(3)))
    data = load_data(str(folder))
    assert data.class_names == ("0", "1", "2", "3") and data.y_test.tolist() == [1, 1, 1, 3, 3, 3]
    assert load_data_for(model, folder).y_test.tolist() == load_data_for(model, tmp_path / "numt.csv").y_test.tolist()
    code, out, err = run_cli("validate", model, "--data", folder, "--normalize", "none", "--profile",
                             fast_profile_path)
    assert code == 0 and "100.00%" in out and "names its own" not in err, out + err
    _pixel_folder(folder / "test", {"01": 1}, per_class=1)
    with pytest.raises(DataError, match="class folders '01' and '1' are one class number"):
        load_data(str(folder))


def test_load_data_for_numbers_the_labels_as_the_models_outputs(tmp_path, fast_profile_path, run_cli):
    """A test folder of classes b and d of a model's a..d: its labels were the data's own 0 and 1, so
    argmax(model(x)) == y_test scored 0% where validate said 100%."""
    import json

    import onnxruntime as ort
    from conftest import pixel_onnx

    from edgekd.data_match import load_data_for
    from edgekd.onnx_metadata import CLASS_NAMES_KEY

    folder = _pixel_folder(tmp_path / "bd" / "test", {"b": 1, "d": 3}).parent
    model = pixel_onnx(tmp_path / "m.onnx", metadata={CLASS_NAMES_KEY: json.dumps(list("abcd"))})
    data = load_data_for(model, folder, normalize="none")
    assert data.class_names == tuple("abcd") and data.y_test.tolist() == [1, 1, 1, 3, 3, 3]
    predicted = ort.InferenceSession(str(model)).run(None, {"x": data.x_test})[0].argmax(1)
    assert (predicted == data.y_test).all()
    code, out, err = run_cli("validate", model, "--data", folder, "--normalize", "none", "--profile",
                             fast_profile_path)
    assert code == 0 and "100.00%" in out, out + err


def test_a_test_folder_alone_is_not_for_training(tmp_path):
    from edgekd.pipeline import CompressConfig
    from edgekd.run_inputs import run_data

    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    with pytest.raises(DataError, match="holds only a test split"):
        run_data(CompressConfig(data=str(folder)), lambda _m: None)


def _wide_images(folder, classes, per_class, height=30, width=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)).save(
                folder / name / f"{i:02d}.png")


def test_non_square_images_keep_their_aspect_ratio_unless_resized(tmp_path):
    from edgekd.preprocess import describe_preprocess

    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    ds = load_data(str(tmp_path / "wide"))
    assert ds.input_shape == (3, 30, 40)  # as stored: not stretched to a 40x40 square
    pre = ds.describe()["preprocess"]
    assert pre["resize"] == [30, 40] and "resized to 30 high x 40 wide (PIL BICUBIC" in describe_preprocess(pre)
    ds = load_data(str(tmp_path / "wide"), resolution="15x20")
    assert ds.input_shape == (3, 15, 20) and ds.describe()["preprocess"]["resize"] == [15, 20]
    from PIL import Image

    with Image.open(tmp_path / "wide" / "b" / "02.png") as img:  # Pillow sizes are (width, height)
        raw = np.asarray(img.resize((20, 15), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    deployed = (raw.transpose(2, 0, 1) - ds.preprocess.mean[0]) / ds.preprocess.std[0]
    rows = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert np.isclose(rows, deployed[None], atol=1e-5).all(axis=(1, 2, 3)).any()  # the record reproduces it
    assert load_data(str(tmp_path / "wide"), resolution=16).describe()["preprocess"]["resize"] == 16


def test_a_resolution_that_turns_the_images_is_warned_about(tmp_path):
    """640x480 typed as a camera's width x height turns landscape frames portrait: loaded as asked, with a warning
    that names the --resolution that keeps them as they are; a split layout says so too."""
    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    turned = load_data(str(tmp_path / "wide"), resolution="40x30")
    assert turned.input_shape == (3, 40, 30)
    assert turned.notes == ("--resolution 40x30 is HEIGHTxWIDTH and makes the images, stored 30 high x 40 wide, "
                            "portrait; pass --resolution 30x40 to keep their orientation",)
    for kept in ("15x20", "16", None):  # same orientation, square, as stored: nothing to say
        assert load_data(str(tmp_path / "wide"), resolution=kept).notes == ()
    _wide_images(tmp_path / "split" / "train", ("a", "b"), 6)
    _wide_images(tmp_path / "split" / "test", ("a", "b"), 2)
    assert "pass --resolution 30x40" in load_data(str(tmp_path / "split"), resolution="40x30").notes[0]


def test_images_of_several_sizes_resized_to_the_first_ones_are_warned_about(tmp_path):
    """With no --resolution the first image sets every image's size: one odd image listed first (a screenshot
    among camera frames) stretched the whole set to its shape, unsaid; a test folder alone and a CSV list say so too."""
    from PIL import Image

    _wide_images(tmp_path / "mixed", ("a", "b"), 6)
    Image.new("RGB", (10, 50)).save(tmp_path / "mixed" / "a" / "00.png")  # sorted first: 50 high x 10 wide
    ds = load_data(str(tmp_path / "mixed"))
    assert ds.input_shape == (3, 50, 10)  # as documented: the first image's size
    assert ds.notes == ("'mixed': its 12 images come in 2 sizes and were all resized to the first one's, 50x10 "
                        "(height x width, a/00.png, shared by 1); 11 of them are 30x40, e.g. a/01.png; pass "
                        "--resolution (e.g. 30x40) to choose the size the model takes",)
    assert load_data(str(tmp_path / "mixed"), resolution="30x40").notes == ()  # the size chosen: nothing to say
    _wide_images(tmp_path / "held" / "test", ("a", "b"), 2)
    Image.new("RGB", (40, 30)).resize((20, 30)).save(tmp_path / "held" / "test" / "b" / "01.png")
    held = load_data(str(tmp_path / "held"))
    # the first image's size is the most common: the odd image is named (it was not), and --resolution 30x40, the
    # size used already, is not suggested (it was, a fix that changed nothing)
    assert held.notes[0] == ("'held': its 4 images come in 2 sizes and were all resized to the first one's, 30x40 "
                             "(height x width, test/a/00.png, shared by 3); 1 is 30x20: test/b/01.png; check that "
                             "it belongs in the data (an image of another aspect ratio is stretched to this one)")
    listed = tmp_path / "list.csv"
    listed.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n"
                                                for f in sorted((tmp_path / "mixed").rglob("*.png"))))
    assert any(n.startswith("'list.csv': its 12 images come in 2 sizes and were all resized to the first one's, "
                            "50x10 (height x width, mixed/a/00.png") for n in load_data(str(listed)).notes)


def test_validate_and_gate_say_when_their_resolution_turns_the_images(tmp_path, run_cli, fast_profile_path):
    """Both load the data again with a --resolution of their own; a turned image fails accuracy with no other
    clue, so the warning comes with the accuracy line."""
    from conftest import foreign_onnx

    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    path = foreign_onnx(tmp_path / "portrait.onnx", (3, 40, 30), 2)
    data = ["--data", str(tmp_path / "wide"), "--resolution", "40x30"]
    warning = "--resolution 40x30 is HEIGHTxWIDTH and makes the images, stored 30 high x 40 wide, portrait"
    code, out, err = run_cli("validate", path, *data, "--profile", fast_profile_path)
    assert code == 0 and "accuracy on wide test split" in out and f"warning: {warning}" in err, out + err
    code, out, err = run_cli("gate", path, *data, "--min-accuracy", "0", "--config", os.devnull)
    assert code == 0 and f"; warning: {warning}; pass --resolution 30x40" in out.split("| accuracy |")[1], out + err


def test_the_run_logs_the_orientation_warning(tmp_path):
    from edgekd.pipeline import CompressConfig
    from edgekd.run_inputs import run_data

    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    lines: list[str] = []
    run_data(CompressConfig(data=str(tmp_path / "wide"), resolution="40x30", progress=False), lines.append)
    assert any(line.startswith("warning: --resolution 40x30 is HEIGHTxWIDTH") for line in lines)


def test_a_manifest_recheck_says_when_its_resolution_turns_the_images(tmp_path, fast_profile):
    """validate --manifest measures accuracy on the run's own folder again; the warning joins the accuracy line."""
    from conftest import foreign_onnx

    from edgekd.manifest_check import RecheckConfig, _recheck_accuracy

    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    path = foreign_onnx(tmp_path / "portrait.onnx", (3, 40, 30), 2)
    manifest = {"data": {"name": "wide", "input_shape": [3, 40, 30]},
                "recipe": {"data": str(tmp_path / "wide"), "resolution": "40x30"}}
    check = _recheck_accuracy(path, {"accuracy": 0.5}, manifest, fast_profile, RecheckConfig())
    assert check.name == "accuracy" and "recorded 50.00%" in check.message
    assert "; warning: --resolution 40x30 is HEIGHTxWIDTH and makes the images" in check.message
    assert "pass --resolution 30x40" in check.message


@pytest.mark.parametrize("limit", [10, 20])  # Pillow raises beyond twice its limit, and only warns below that
def test_an_image_too_large_to_decode_safely_is_named(tmp_path, monkeypatch, limit):
    from PIL import Image

    _images(tmp_path / "data", ("a", "b"), 3)  # 36 pixels each
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match=r"a/00\.png: is too large to decode safely \(Image size \(36 pixels\) "
                                        r"exceeds limit.*downscale it \(edgekd trains at most 4096 pixels a side\)"):
        load_data(str(tmp_path / "data"))


def test_images_in_a_sub_folder_of_a_class_are_refused_not_skipped(tmp_path):
    _images(tmp_path / "data", ("a", "b"), 10)
    _images(tmp_path / "data" / "a", (".thumbs",), 2)  # hidden: not data, as hidden class folders are not
    assert load_data(str(tmp_path / "data")).num_classes == 2
    _images(tmp_path / "data" / "a", ("more",), 2)
    with pytest.raises(DataError, match=r"data: class folder 'a' holds a sub-folder 'more', whose images edgekd "
                                        r"would not read; move the images of 'more' up into 'a/'"):
        load_data(str(tmp_path / "data"))


def test_images_too_small_as_stored_need_a_resolution_as_the_flag_does(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((1, 1), 40 * i, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    with pytest.raises(DataError, match=r"images are 1x1 \(height x width\), too small to use as stored; "
                                        r"pass --resolution to resize them \(4 to 4096 pixels a side"):
        load_data(str(tmp_path / "data"))
    assert load_data(str(tmp_path / "data"), resolution=4).input_shape == (1, 4, 4)


# --- how files are found and read ----------------------------------------------------------------------------

def test_a_phone_photo_is_read_upright_as_its_exif_orientation_shows_it(tmp_path):
    """Stored 8 high x 12 wide, top half bright, tagged "turn 90 degrees clockwise to show": shown (and fed by a
    pipeline using ImageOps.exif_transpose) 12 high x 8 wide with its right half bright."""
    from PIL import Image

    pixels = np.zeros((8, 12), np.uint8)
    pixels[:4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(pixels).save(tmp_path / "d" / name / f"{i}.png", exif=exif.tobytes())
    ds = load_data(str(tmp_path / "d"), normalize="none")
    assert ds.input_shape == (1, 12, 8)
    image = ds.x_train[0, 0]
    assert image[:, :4].mean() < 0.1 and image[:, 4:].mean() > 0.9


def test_kaggle_split_names_and_a_macos_zip_folder_are_a_split_layout(tmp_path):
    _images(tmp_path / "d" / "Training", ("glioma", "normal"), 8)
    _images(tmp_path / "d" / "Testing", ("glioma", "normal"), 2)
    _images(tmp_path / "d" / "__MACOSX" / "Training", ("glioma",), 1)  # resource forks beside the data
    ds = load_data(str(tmp_path / "d"))
    assert ds.class_names == ("glioma", "normal") and (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (14, 2, 4)


def test_a_folder_beside_the_splits_that_is_no_split_is_named(tmp_path):
    _images(tmp_path / "d" / "train", ("cat", "dog"), 3)
    _images(tmp_path / "d" / "test", ("cat", "dog"), 2)
    _images(tmp_path / "d" / "annotations", ("boxes",), 1)
    with pytest.raises(DataError, match=r"holds split folders of class folders \(test, train\) beside 'annotations', "
                                        r"which is not a split name; move annotations/ out of the data, or name it "
                                        r"as a split: train, training, val"):
        load_data(str(tmp_path / "d"))
    _images(tmp_path / "flat", ("train", "bus", "car"), 3)  # classes, one of them named like a split: no layout
    assert load_data(str(tmp_path / "flat")).class_names == ("bus", "car", "train")


def test_class_folders_named_on_macos_match_a_test_set_named_elsewhere(tmp_path):
    """macOS writes "café" decomposed (NFD), Linux as typed (NFC): one class either way, sorted as NFC."""
    import unicodedata

    from edgekd.data_match import labels_for

    nfd = [unicodedata.normalize("NFD", n) for n in ("café", "thé", "zoo")]
    _images(tmp_path / "mac", nfd, 3)
    _images(tmp_path / "linux" / "test", ("café", "thé"), 2)
    trained, test = load_data(str(tmp_path / "mac")), load_data(str(tmp_path / "linux"))
    assert trained.class_names == test.class_names[:2] + ("zoo",) == ("café", "thé", "zoo")
    assert labels_for(test, tuple(nfd)).tolist() == [0, 0, 1, 1]  # names a model recorded on macOS
    (tmp_path / "mac" / "café").mkdir()  # the same name in its other form, beside it
    with pytest.raises(DataError, match="are one name, written in two Unicode forms"):
        load_data(str(tmp_path / "mac"))


def test_files_that_are_not_read_are_said_and_jfif_is_read(tmp_path, monkeypatch):
    from PIL import Image

    _images(tmp_path / "d", ("cat", "dog"), 5)
    Image.new("L", (6, 6)).save(tmp_path / "d" / "cat" / "extra.jfif", format="JPEG")
    for name in ("a.gif", "b.gif", "notes.txt"):
        (tmp_path / "d" / "dog" / name).write_bytes(b"x")
    ds = load_data(str(tmp_path / "d"))
    assert _sizes(ds) == 11
    assert ds.notes == (f"{tmp_path / 'd'}: 3 files in the class folders are not .png/.jpg/.bmp/.tif/.webp images "
                        "and were not read (2 .gif, 1 .txt); convert the images among them to PNG or JPEG to use "
                        "them",)
    monkeypatch.chdir(tmp_path / "d")
    assert load_data(".").name == "d"  # the folder's own name, not ""


def test_images_beside_the_class_folders_are_said_not_read(tmp_path):
    """Images lying in the data folder (or a split folder) beside the class folders were skipped unsaid."""
    from PIL import Image

    _images(tmp_path / "d", ("cat", "dog"), 5)
    for i in range(3):
        Image.new("L", (6, 6)).save(tmp_path / "d" / f"unsorted_{i}.png")
    assert load_data(str(tmp_path / "d")).notes == (
        f"{tmp_path / 'd'}: 3 images lie beside the class folders, in no class folder, and were not read (e.g. "
        f"{tmp_path / 'd' / 'unsorted_0.png'}); move each into the folder of its class to use them",)
    _images(tmp_path / "t" / "test", ("cat", "dog"), 2)
    Image.new("L", (6, 6)).save(tmp_path / "t" / "test" / "stray.png")
    (note,) = load_data(str(tmp_path / "t")).notes
    assert note.startswith(f"{tmp_path / 't'}: 1 image lies beside the class folders") and "stray.png" in note


def test_palette_images_with_transparency_are_read_without_a_warning_each(tmp_path):
    """Pillow warned twice a line per palette PNG whose transparency is one alpha per colour: 20,000 images,
    40,000 lines. Read through RGBA, they keep their colours and warn nothing."""
    import warnings

    from PIL import Image

    for name, colour in (("red", 1), ("green", 2)):
        (tmp_path / "p" / name).mkdir(parents=True)
        for i in range(3):
            img = Image.new("P", (4, 4), colour)
            img.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0])
            img.save(tmp_path / "p" / name / f"{i}.png", transparency=bytes([0, 255, 128]))
    with Image.open(tmp_path / "p" / "red" / "0.png") as img:
        assert isinstance(img.info["transparency"], bytes)  # the kind Pillow warns about
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ds = load_data(str(tmp_path / "p"), normalize="none")
    assert not [w for w in said if "Palette" in str(w.message)], [str(w.message) for w in said]
    pixels = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert pixels.shape[1] == 3 and sorted({tuple(np.round(p[:, 0, 0] * 255)) for p in pixels}) == [
        (0, 200, 0), (200, 0, 0)]


def test_one_image_in_two_class_folders_is_refused_as_in_a_csv(tmp_path):
    """A link in ñandú/ to a file in café/ was read as an image of both classes, unsaid; a CSV listing one image
    under two labels is refused."""
    _images(tmp_path / "d", ("café", "ñandú"), 3)
    (tmp_path / "d" / "ñandú" / "linked.png").symlink_to(tmp_path / "d" / "café" / "01.png")
    with pytest.raises(DataError) as caught:
        load_data(str(tmp_path / "d"))
    assert str(caught.value) == (f"{tmp_path / 'd'}: café/01.png and ñandú/linked.png are one image, in class "
                                 "folders 'café' and 'ñandú'; keep it in the folder of its one class, and remove "
                                 "the other copy or link")
    _images(tmp_path / "s" / "test", ("a", "b"), 2)
    (tmp_path / "s" / "test" / "b" / "x.png").symlink_to(tmp_path / "s" / "test" / "a" / "00.png")
    with pytest.raises(DataError, match=r"test/a/00\.png and test/b/x\.png are one image"):
        load_data(str(tmp_path / "s"))
    (tmp_path / "d" / "ñandú" / "linked.png").unlink()
    (tmp_path / "d" / "ñandú" / "again.png").symlink_to(tmp_path / "d" / "ñandú" / "01.png")  # one class: as before
    assert load_data(str(tmp_path / "d")).class_names == ("café", "ñandú")


def _sizes(ds):
    return len(ds.y_train) + len(ds.y_val) + len(ds.y_test)


def test_a_rare_class_keeps_a_training_image_when_validation_is_carved_from_train(tmp_path):
    """A class of one training image could go to validation whole, and never be trained."""
    _images(tmp_path / "d" / "train", ("a", "b"), 20)
    _images(tmp_path / "d" / "train", ("c",), 1)
    _images(tmp_path / "d" / "test", ("a", "b", "c"), 2)
    for seed in range(8):
        ds = load_data(str(tmp_path / "d"), seed=seed)
        assert np.bincount(ds.y_train).tolist() == [18, 18, 1] and np.bincount(ds.y_val).tolist() == [2, 2]


def test_training_images_one_per_class_leave_none_for_validation(tmp_path):
    _images(tmp_path / "d" / "train", ("a", "b"), 1)
    _images(tmp_path / "d" / "test", ("a", "b"), 2)
    with pytest.raises(DataError, match=r"its 2 training images are one per class, so none can be held out for "
                                        r"validation .*; provide more training images, or a validation split"):
        load_data(str(tmp_path / "d"))


def test_the_memory_check_counts_the_channels_the_images_are_converted_to(tmp_path, monkeypatch):
    """--channels 3 triples grayscale images once read: the check counted them at one channel."""
    import edgekd.preprocess

    _images(tmp_path / "d", ("a", "b"), 10)  # 20 images of 6x6: 20 * 36 * 4 bytes * 4 = 11,520 bytes at 1 channel
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 6, 6), np.uint8), y=np.arange(20) % 2)
    monkeypatch.setattr(edgekd.preprocess, "available_memory", lambda: 20_000)
    for source in (tmp_path / "d", tmp_path / "d.npz"):
        assert load_data(str(source)).input_shape == (1, 6, 6)
        with pytest.raises(DataError, match=r"20 images at 6x6 .* would take about"):
            load_data(str(source), channels=3)


def test_the_resize_of_image_files_is_recorded_as_exactly_what_it_is(tmp_path):
    """"bicubic" alone read as torch's or OpenCV's kernel, which neither antialiases when shrinking nor rounds to
    8-bit pixels: a consumer implementing it fed inputs about 2 std off what the model was trained on."""
    from PIL import Image

    from edgekd.preprocess import PIL_BICUBIC, PIL_BICUBIC_16, describe_preprocess

    _wide_images(tmp_path / "wide", ("a", "b"), 6)
    pre = load_data(str(tmp_path / "wide"), resolution=8).describe()["preprocess"]
    assert pre["resize_method"] == PIL_BICUBIC == ("PIL BICUBIC (antialiased when shrinking), on 8-bit pixels, "
                                                   "after EXIF orientation")
    assert f"resized to 8x8 ({PIL_BICUBIC})" in describe_preprocess(pre)
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "xray" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 60000, size=(12, 12), dtype=np.uint16)).save(tmp_path / "xray" / c
                                                                                           / f"{i}.png")
    assert load_data(str(tmp_path / "xray"), resolution=8).describe()["preprocess"]["resize_method"] == PIL_BICUBIC_16


def test_a_record_saying_bicubic_is_the_same_resize_as_today_s_exact_wording(small_data):
    """Records written before the exact wording said "bicubic" for Pillow's resize: a teacher cached under it is
    the same teacher, a distilled folder's data the same data; another method is still another record."""
    import dataclasses

    from edgekd.preprocess import PIL_BICUBIC, PIL_BICUBIC_16, comparable
    from edgekd.teacher import TeacherRecipe

    def named(method):
        return dataclasses.replace(small_data, preprocess=dataclasses.replace(small_data.preprocess,
                                                                              resize_method=method))

    old, new, new16 = (named(m).describe() for m in ("bicubic", PIL_BICUBIC, PIL_BICUBIC_16))
    assert comparable(new) == comparable(new16) == comparable(old) == old and new != old
    assert comparable(named("bilinear, align_corners=False").describe()) != comparable(new)
    assert TeacherRecipe().digest(named(PIL_BICUBIC)) == TeacherRecipe().digest(named("bicubic"))
    assert TeacherRecipe().digest(named(PIL_BICUBIC)) != TeacherRecipe().digest(small_data)


@pytest.fixture
def beat_at_once(monkeypatch):
    """Reading images says how far it is from the first image on, a line for every tick."""
    from edgekd import heartbeat, images

    monkeypatch.setattr(images, "QUIET_S", 0.0)
    monkeypatch.setattr(heartbeat, "EVERY_S", 0.0)


def test_a_long_read_of_images_says_how_far_it_is_through_log_only(tmp_path, beat_at_once, capsys):
    """Decoding 20,000 photos takes minutes, silent but for these lines (a CI job is killed after minutes
    without output); a Python caller passing no log hears nothing."""
    _images(tmp_path / "big", ("cat", "dog"), 3)
    (tmp_path / "big.csv").write_text("path,label\n" + "".join(f"big/{c}/{i:02d}.png,{c}\n" for c in ("cat", "dog")
                                                               for i in range(3)))
    for source, named in ((tmp_path / "big", "big"), (tmp_path / "big.csv", "big.csv")):
        lines: list[str] = []
        load_data(str(source), log=lines.append)
        assert lines == [*(f"data: read {n} of 6 image headers of '{named}'" for n in range(1, 7)),
                         *(f"data: decoded {n} of 6 images of '{named}'" for n in range(1, 7))]
    load_data(str(tmp_path / "big"))
    assert capsys.readouterr() == ("", "")


def test_a_quick_read_of_images_says_nothing(tmp_path):
    """The lines start after QUIET_S seconds: a small folder, decoded in a second, adds no line to a log."""
    _images(tmp_path / "small", ("cat", "dog"), 3)
    lines: list[str] = []
    load_data(str(tmp_path / "small"), log=lines.append)
    assert lines == []


def test_validate_says_how_far_its_read_is_on_stderr(named_teacher_onnx, fast_profile_path, tmp_path, run_cli,
                                                      monkeypatch):
    """The progress of --data's read goes to stderr, the report on stdout stays as it was."""
    import re

    from edgekd import heartbeat, images

    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    args = ("validate", named_teacher_onnx, "--data", folder, "--resolution", "16", "--profile", fast_profile_path)
    code, quiet_out, quiet_err = run_cli(*args)
    assert code == 0 and "data:" not in quiet_err
    monkeypatch.setattr(images, "QUIET_S", 0.0)
    monkeypatch.setattr(heartbeat, "EVERY_S", 1e9)  # the first line and the last
    code, out, err = run_cli(*args)
    timed = re.compile(r"\d+\.\d+")  # latency differs run to run
    assert code == 0 and timed.sub("#", out) == timed.sub("#", quiet_out)
    assert err == ("data: read 1 of 30 image headers of 'heldout'\ndata: decoded 30 of 30 images of 'heldout'\n"
                   + quiet_err)


def test_gate_says_how_far_its_read_is_on_stderr_only(named_teacher_onnx, tmp_path, run_cli, beat_at_once):
    """gate's stdout is its report, read by CI: the progress of --data's read goes to stderr."""
    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    code, out, err = run_cli("gate", named_teacher_onnx, "--data", folder, "--resolution", "16", "--min-accuracy",
                             "0", "--no-latency")
    assert code == 0 and "data:" not in out, out + err
    assert "data: decoded 30 of 30 images of 'heldout'\n" in err and "data: read 1 of 30 image headers" in err


# --- the user's own folders as they come: other systems' names, links, litter ---------------------------------

def test_file_names_that_are_not_utf8_are_read_and_hashed(named_teacher_onnx, fast_profile_path, tmp_path, run_cli):
    """A file named in cp1252 (from a Windows zip) crashed validate and compress with a UnicodeEncodeError
    traceback naming no file: the digests of the names encoded them as UTF-8."""
    from edgekd.data import data_digest, data_source

    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    os.rename(folder / "test" / "two" / "3.png", os.fsencode(folder / "test" / "two") + b"/\xe9t\xe9.png")
    code, out, err = run_cli("validate", named_teacher_onnx, "--data", folder, "--resolution", "16",
                             "--profile", fast_profile_path)
    assert code == 0 and "accuracy on heldout test split (30 images)" in out, out + err
    assert len(data_digest(folder)) == 64 and data_source(folder)["sha256"] == data_digest(folder)
    _images(tmp_path / "whole", ("a", "b"), 6)  # split by the seed: the order of the names is recorded too
    os.rename(tmp_path / "whole" / "a" / "02.png", os.fsencode(tmp_path / "whole" / "a") + b"/\xe9.png")
    assert load_data(str(tmp_path / "whole")).split_order


def test_a_class_folder_named_otherwise_than_in_utf8_is_refused_by_name(named_teacher_onnx, fast_profile_path,
                                                                          tmp_path, run_cli):
    """Its name becomes a class name, which the model's metadata and the manifest record as UTF-8 text: it
    is named (escaped, on one line) and the rename said, where validate and compress crashed with a traceback."""
    folder = _digit_folder(tmp_path / "heldout", (7, 2))
    os.rename(folder / "test" / "two", os.fsencode(folder / "test") + b"/tw\xe9")
    code, out, err = run_cli("validate", named_teacher_onnx, "--data", folder, "--resolution", "16",
                             "--profile", fast_profile_path)
    assert (code, out) == (2, "") and err == (
        f"error: {folder / 'test'}: class folder 'tw\\udce9' is not named in UTF-8 (its name becomes the class "
        f"name the model records); rename it in UTF-8, e.g. with convmv -f cp1252 -t utf8 -r --notest "
        f"'{folder / 'test'}'\n")


def test_an_image_linked_twice_in_its_class_is_read_once_as_in_a_csv(tmp_path):
    """Folders of links into a shared pool: a link beside the file it links to was read as a second image, so one
    copy could train while its twin was scored, and the image count was wrong. A CSV listing it twice reads it once."""
    from edgekd.data import data_digest
    from edgekd.images import image_files

    _images(tmp_path / "d", ("a", "b"), 10)
    before = data_digest(tmp_path / "d")
    for i in range(4):
        (tmp_path / "d" / "a" / f"link{i}.png").symlink_to(f"{i:02d}.png")
    ds = load_data(str(tmp_path / "d"))
    assert _sizes(ds) == 20 and np.bincount(np.concatenate([ds.y_train, ds.y_val, ds.y_test])).tolist() == [10, 10]
    assert ds.notes == (f"{tmp_path / 'd'}: 4 image files repeat images of their class (e.g. a/link0.png is a/00.png, "
                        "linked); each image is read once, at the first of its names",)
    # the run's record of the folder hashes what is read: the links add nothing to it
    assert not [f for f in image_files(tmp_path / "d") if "link" in f.name] and data_digest(tmp_path / "d") == before
    _images(tmp_path / "s" / "train", ("a", "b"), 6)
    _images(tmp_path / "s" / "test", ("a", "b"), 2)
    (tmp_path / "s" / "test" / "b" / "twin.png").symlink_to(tmp_path / "s" / "train" / "b" / "00.png")
    split = load_data(str(tmp_path / "s"))  # in train/ and test/ both: trained on, never scored
    assert len(split.y_test) == 4 and split.notes[-1].startswith(f"{tmp_path / 's'}: 1 image file repeats an image "
                                                                 "of its class (e.g. test/b/twin.png is train/b/00.png")


def test_classes_are_numbered_as_torchvision_s_image_folder_numbers_them(tmp_path):
    """Sorted by their composed (NFC) names, folders named on macOS (decomposed: "e" and an accent) were numbered
    otherwise than torchvision's ImageFolder numbers that very folder, which trained the teacher: église went after
    fontaine, so the teacher's outputs were scored, and distilled, as other classes."""
    import unicodedata

    nfd = ("arbre", unicodedata.normalize("NFD", "église"), "fontaine")
    _images(tmp_path / "mac", nfd, 3)
    image_folder = sorted(e.name for e in os.scandir(tmp_path / "mac") if e.is_dir())  # torchvision's find_classes
    assert load_data(str(tmp_path / "mac")).class_names == tuple(unicodedata.normalize("NFC", n) for n in image_folder)
    assert load_data(str(tmp_path / "mac")).class_names == ("arbre", "église", "fontaine")
    # train/ named on macOS, test/ elsewhere (composed): one order, train/'s, each image under its own class
    _images(tmp_path / "split" / "train", nfd, 4)
    for name, count in (("arbre", 1), ("église", 3), ("fontaine", 2)):
        _images(tmp_path / "split" / "test", (name,), count)
    split = load_data(str(tmp_path / "split"))
    assert split.class_names == ("arbre", "église", "fontaine") and np.bincount(split.y_test).tolist() == [1, 3, 2]
    _images(tmp_path / "held" / "test", nfd, 2)  # a held-out test set alone
    assert load_data(str(tmp_path / "held")).class_names == ("arbre", "église", "fontaine")


def test_windows_and_macos_litter_in_class_folders_is_skipped_unsaid(tmp_path):
    """Thumbs.db and desktop.ini were counted as data not read, with advice to convert "the images among them", on
    every run and in every gate's accuracy detail; .DS_Store never was."""
    _images(tmp_path / "d", ("cat", "dog"), 5)
    for name in ("Thumbs.db", "ehthumbs.db", "desktop.ini", "Desktop.ini", "Icon\r", ".DS_Store"):
        (tmp_path / "d" / ("cat" if name.islower() else "dog") / name).write_bytes(b"x")
    ds = load_data(str(tmp_path / "d"))
    assert _sizes(ds) == 10 and ds.notes == ()
    for name in ("cat", "dog"):
        for f in (tmp_path / "d" / name).glob("*.png"):
            f.unlink()
    with pytest.raises(DataError, match=r"found 2 class folders and 0 images; use one sub-folder"):  # nothing else
        load_data(str(tmp_path / "d"))


def test_a_broken_link_is_named_as_one(tmp_path):
    _images(tmp_path / "d", ("a", "b"), 4)
    (tmp_path / "d" / "a" / "gone.png").symlink_to(tmp_path / "nowhere" / "x.png")
    with pytest.raises(DataError) as caught:
        load_data(str(tmp_path / "d"))
    assert str(caught.value) == (f"{tmp_path / 'd' / 'a' / 'gone.png'}: cannot be read as an image (a broken link "
                                 f"to {tmp_path / 'nowhere' / 'x.png'}); remove or replace that file")
