"""A CSV file listing images and their labels (Kaggle-style datasets), read as an image folder is."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.data import load_data
from edgekd.errors import DataError


def _listed(root, rows, header="path,label", name="labels.csv", sep=","):
    """Images (6x6 gray, a shade per class so a label can be checked against its image) and the CSV listing
    them; ``rows`` are (relative path, label, *more cells)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    step = 220 // max(1, len({label for _, label, *_ in rows}))  # shades apart, kept within 8 bits
    shades = {}
    for file, label, *_ in rows:
        shade = shades.setdefault(label, step * len(shades))
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.integers(0, step // 2 + 1, size=(6, 6)) + shade).astype(np.uint8)).save(root / file)
    lines = [header] + [sep.join(str(c) for c in row) for row in rows]
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def _brightness(ds, split="test"):
    x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
    means = x.mean(axis=(1, 2, 3))
    return {name: means[y == i] for i, name in enumerate(ds.class_names) if (y == i).any()}


def test_named_labels_are_numbered_in_sorted_order_and_split_70_10_20(tmp_path):
    rows = [(f"imgs/{i:03d}.png", ("owl", "cat", "dog")[i % 3]) for i in range(60)]
    ds = load_data(str(_listed(tmp_path, rows)))
    assert ds.class_names == ("cat", "dog", "owl") and ds.input_shape == (1, 6, 6)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (42, 6, 12)
    seen = _brightness(ds)  # owl was listed first, so it is the darkest: its label followed its image
    assert seen["owl"].max() < seen["cat"].min() < seen["cat"].max() < seen["dog"].min()
    assert ds.preprocess.scale == pytest.approx(1 / 255)


def test_number_labels_a_split_column_other_headers_and_separators(tmp_path):
    rows = [(f"{i:03d}.png", i % 2, ("train", "train", "train", "valid", "test")[i % 5]) for i in range(40)]
    path = _listed(tmp_path, rows, header="Filename;Target;Split", name="list.csv", sep=";")
    ds = load_data(str(path))
    assert ds.class_names == ("0", "1")
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (24, 8, 8)
    # a test split alone is a held-out test set, for validate and gate
    test_only = [row for row in rows if row[2] == "test"]
    alone = load_data(str(_listed(tmp_path / "t", test_only, header="image,class,split")))
    assert len(alone.y_train) == 0 and len(alone.y_test) == 8


@pytest.mark.parametrize("header, rows, message, fix", [
    ("file,name", [("a.png", "x")], r"has no label column \(its header: file, name\)", "label, labels, class"),
    ("label,id", [("x", "a.png")], r"has no image column \(its header: label, id\)", "path, file, filename"),
    ("path,label", [("a.png", ""), ("b.png", "x")], "row 2 has no label", "every row"),
    ("path,label,split", [("a.png", "x", "holdout")], "row 2 has split 'holdout'", "test, testing, train, training"),
    ("path,label", [], "lists no images under its header", "path,label"),
])
def test_lists_that_cannot_be_read_are_refused_by_row_or_column(tmp_path, header, rows, message, fix):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n")
    (tmp_path / "a.png").write_bytes(b"")  # never decoded: the list is refused first
    with pytest.raises(DataError, match=message) as exc:
        load_data(str(path))
    assert fix in exc.value.fix


def test_missing_and_non_image_files_are_named_before_any_is_decoded(tmp_path):
    rows = [(f"imgs/{i}.png", i % 2) for i in range(10)]
    path = _listed(tmp_path, rows)
    (tmp_path / "imgs" / "3.png").unlink()
    (tmp_path / "imgs" / "7.png").unlink()
    with pytest.raises(DataError, match=r"2 of 10 listed images do not exist \(e\.g\. .*imgs/3\.png\)") as exc:
        load_data(str(path))
    # The other eight resolve: the paths are right and two files are gone (it said to rewrite the paths).
    assert exc.value.fix == "restore those files, or remove their rows from labels.csv"
    (tmp_path / "elsewhere").mkdir()
    moved = (tmp_path / "elsewhere" / "labels.csv")
    moved.write_text(path.read_text())  # its paths now resolve from the wrong folder: none exists
    with pytest.raises(DataError, match=r"10 of 10 listed images do not exist") as exc:
        load_data(str(moved))
    assert exc.value.fix == f"write paths relative to the CSV's folder ({tmp_path / 'elsewhere'}), or absolute"
    (tmp_path / "notes.txt").write_text("x")
    path.write_text("path,label\nimgs/0.png,0\nnotes.txt,1\n")
    with pytest.raises(DataError, match="lists notes.txt, which is not an image file"):
        load_data(str(path))
    path.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_data(str(path))


def test_a_split_list_with_training_rows_alone_or_a_class_missing_from_them_is_refused(tmp_path):
    rows = [(f"{i}.png", i % 2, "train") for i in range(20)]
    with pytest.raises(DataError, match="holds training images alone, so nothing is held out") as exc:
        load_data(str(_listed(tmp_path, rows, header="path,label,split")))
    assert "split column" in exc.value.fix
    rows = [(f"{i}.png", ("a", "b", "c")[i % 3], "test" if i % 3 == 2 else "train") for i in range(30)]
    with pytest.raises(DataError, match="no training image has label 2"):
        load_data(str(_listed(tmp_path / "m", rows, header="path,label,split")))


def test_whole_number_float_labels_and_windows_paths_are_read_as_meant(tmp_path):
    # pandas writes an int column with gaps as 3.0; a list made on Windows separates folders with backslashes
    rows = [(f"imgs/{i:03d}.png", i % 12) for i in range(120)]
    _listed(tmp_path, rows)
    lines = ["path,label"] + [f"imgs\\{i:03d}.png,{i % 12}.0" for i in range(120)]
    (tmp_path / "win.csv").write_text("\n".join(lines) + "\n")
    ds = load_data(str(tmp_path / "win.csv"))
    assert ds.class_names == tuple(str(i) for i in range(12))  # numbers, not names sorted as text ("10" < "2")
    seen = _brightness(ds, "train")
    # shades rise with each label in the order first listed (0, 1, ..., 11): class i is the i-th brightest
    assert all(seen[str(i)].max() < seen[str(i + 1)].min() for i in range(11))


def test_an_image_listed_twice_is_read_once_and_under_two_labels_is_refused(tmp_path):
    """Split apart, a repeated row's copies would be trained on and tested on both."""
    rows = [(f"imgs/{c}{i}.png", c) for c in "ab" for i in range(10)]
    path = _listed(tmp_path, rows + rows[:4] + [("./imgs/a5.png", "a")])
    ds = load_data(str(path))
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 20
    assert ds.notes == (f"{path}: 5 rows repeat an image and label listed above (e.g. row 22); each image is read "
                        "once, at its first row",)
    path = _listed(tmp_path, rows + [("imgs/a3.png", "b")])
    with pytest.raises(DataError, match=r"lists .*imgs/a3.png as 'a' \(row 5\) and as 'b' \(row 22\); keep one row "
                                        r"per image, with its one label"):
        load_data(str(path))


def test_a_label_typed_on_macos_and_one_typed_elsewhere_are_one_class(tmp_path):
    import unicodedata

    rows = [(f"imgs/{i}.png", unicodedata.normalize("NFD" if i % 2 else "NFC", "café")) for i in range(8)]
    ds = load_data(str(_listed(tmp_path, rows + [(f"imgs/t{i}.png", "thé") for i in range(8)])))
    assert ds.class_names == ("café", "thé")


def test_named_labels_are_numbered_as_written_as_class_folders_are(tmp_path):
    """Labels listed from a macOS folder's names come decomposed (NFD), and are numbered in the order that folder's
    classes are, by the names as stored (torchvision's rule): sorted composed, église went after fontaine."""
    import unicodedata

    names = ("arbre", unicodedata.normalize("NFD", "église"), "fontaine")
    rows = [(f"imgs/{i}.png", names[i % 3]) for i in range(30)]
    ds = load_data(str(_listed(tmp_path, rows)))
    assert ds.class_names == ("arbre", "église", "fontaine")  # composed, as every name is matched


def test_the_folders_of_a_csv_are_read_once_per_version_of_the_file(tmp_path, monkeypatch):
    """Every stage's output check asks for them; a CSV of a million rows was parsed each time."""
    import os

    from edgekd import image_list

    path = _listed(tmp_path, [(f"a/{i}.png", i % 2) for i in range(4)])
    calls = []
    rows = image_list._rows
    monkeypatch.setattr(image_list, "_rows", lambda *a, **k: calls.append(a) or rows(*a, **k))
    first = image_list.listed_folders(str(path))
    assert image_list.listed_folders(path) == first == [str((tmp_path / "a").resolve())]
    assert len(calls) == 1
    _listed(tmp_path, [(f"a/{i}.png", i % 2) for i in range(4)] + [("b/0.png", 1)])  # edited: read again
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000))
    assert image_list.listed_folders(path) == [str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())]
    assert len(calls) == 2


def test_a_csv_s_rows_reordered_deal_another_split_which_validate_and_gate_are_told(tmp_path, monkeypatch):
    """The split deals by row: the same images listed in another order put training images into the test split.
    The model's record of the split keeps their order (each image by class and file name, as its folder lists
    it), so the note that says "images added" says this too; a record from before the order was kept is read as
    it was (counts alone)."""
    import random

    from edgekd import onnx_metadata
    from edgekd.data import split_fingerprint
    from edgekd.data_match import with_split_note

    rows = [(f"imgs/{label}/{i:03d}.png", label) for label in ("cat", "dog") for i in range(20)]
    listed = _listed(tmp_path, rows)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    (tmp_path / "shuffled.csv").write_text("\n".join(["path,label"] + [f"{f},{c}" for f, c in shuffled]) + "\n")
    then = load_data(str(listed))
    now = load_data(str(tmp_path / "shuffled.csv"))
    assert set(then.y_test.tolist()) == set(now.y_test.tolist())  # dealt alike per class, from other images
    was, is_now = split_fingerprint(then), split_fingerprint(now)
    assert was["digest"] == is_now["digest"] and was["order"] != is_now["order"]
    assert split_fingerprint(load_data(str(tmp_path / "imgs"))) == was  # the same images, read from their folders
    monkeypatch.setattr(onnx_metadata, "embedded_split_seed", lambda model: 0)
    monkeypatch.setattr(onnx_metadata, "embedded_split_data", lambda model: was)
    assert with_split_note(then, "m.onnx", 0).notes == then.notes
    (note,) = set(with_split_note(now, "m.onnx", 0).notes) - set(now.notes)
    assert note.startswith("data 'shuffled.csv' is not the data 'm.onnx' was split on (the same images, listed in "
                           "another order or under other names)")
    monkeypatch.setattr(onnx_metadata, "embedded_split_data", lambda model: {"images": 40, "digest": was["digest"]})
    assert with_split_note(now, "m.onnx", 0).notes == now.notes  # recorded before the order was: not told


def test_a_minus_one_label_is_refused_and_numbers_mixed_with_names_are_said(tmp_path):
    """A -1 ("ignore") made every label a name, so the classes' order became -1, 0, 1, ...; "3" on some rows and
    "three" on others silently made two classes of one."""
    rows = [(f"imgs/{i:03d}.png", i % 3) for i in range(30)]
    rows[4] = ("imgs/004.png", -1)
    with pytest.raises(DataError, match=r"labels.csv: row 6 has label -1, and numbered labels are class numbers "
                                        r"0\.\.K-1; remove the rows of images to leave out"):
        load_data(str(_listed(tmp_path, rows)))
    rows[4] = ("imgs/004.png", "two")
    ds = load_data(str(_listed(tmp_path, rows, name="mixed.csv")))
    assert ds.class_names == ("0", "1", "2", "two")
    assert any(note.endswith("mixed.csv: its labels mix numbers (0, 1, 2) and names ('two', e.g. row 6), so every "
                             "label is read as a name, each its own class in sorted order (4 classes); write every "
                             "label as a class number 0..K-1, or every one as a name") for note in ds.notes), ds.notes


def test_a_headerless_csv_is_told_to_add_a_header_and_placeholder_labels_are_said_what_they_must_be(tmp_path):
    """A CSV without a header was said to have "no image column (its header: imgs/000.png, 0)"; one label on
    every image (--no-labels' placeholders) was told to provide more classes, with nothing saying what
    placeholders --no-labels takes."""
    rows = [(f"imgs/{i:03d}.png", i % 2) for i in range(20)]
    headless = _listed(tmp_path, rows, header="imgs/999.png,0", name="nohdr.csv")
    with pytest.raises(DataError, match=r"nohdr.csv: has no header row \(its first row: imgs/999.png, 0\); add a "
                                        r"header row naming its columns, such as: path,label"):
        load_data(str(headless))
    same = _listed(tmp_path, [(f, 0) for f, _ in rows], name="same.csv")
    with pytest.raises(DataError, match=r"all labels belong to a single class; provide images of at least two "
                                        r"classes \(with --no-labels too: the labels still number the classes, one "
                                        r"per teacher output, and deal the split; label each image with the class "
                                        r"the teacher predicts for it\)"):
        load_data(str(same))
    (tmp_path / "onecol.csv").write_text("path\n" + "\n".join(f for f, _ in rows) + "\n")
    with pytest.raises(DataError, match=r"has no label column \(its header: path\); name the label column one of: "
                                        r".*\(with --no-labels too: "):
        load_data(str(tmp_path / "onecol.csv"))
