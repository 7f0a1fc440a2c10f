"""Image decoding (JPEG, PNG, DICOM with MONOCHROME1 and windowing) and manifest path resolution."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from fairscan.data.images import check_images, is_dicom, load_image, load_resized, resolve_image_path
from fairscan.errors import InputError


@pytest.fixture(scope="module")
def radiograph():
    """pydicom-data's real PA chest radiograph (CR, MONOCHROME1, 15-bit, one window)."""
    data = pytest.importorskip("pydicom.data")
    try:
        path = data.get_testdata_file("RG1_UNCR.dcm")
    except Exception as exc:  # the data manager may want a download
        pytest.skip(f"RG1_UNCR.dcm unavailable: {exc}")
    if path is None:
        pytest.skip("RG1_UNCR.dcm unavailable (install pydicom-data)")
    return path


def test_real_dicom_decodes_with_bone_bright(radiograph):
    img = load_image(radiograph)
    assert img.dtype == np.uint8 and img.shape == (1955, 1841)
    h, w = img.shape
    lung = img[int(0.3 * h) : int(0.45 * h), int(0.2 * w) : int(0.35 * w)].mean()
    spine = img[int(0.3 * h) : int(0.45 * h), int(0.47 * w) : int(0.53 * w)].mean()
    assert spine > lung + 30  # MONOCHROME1 inverted: lungs dark, mediastinum and spine bright


def test_monochrome1_is_the_inverse_of_monochrome2(radiograph, tmp_path):
    import pydicom

    ds = pydicom.dcmread(radiograph)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "mono2.dcm")
    assert np.array_equal(load_image(tmp_path / "mono2.dcm"), 255 - load_image(radiograph))


def test_windowing_clips_outside_the_window(radiograph, tmp_path):
    import pydicom

    ds = pydicom.dcmread(radiograph)
    raw = ds.pixel_array.astype(float)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 12000, 4000  # 10000..14000
    ds.save_as(tmp_path / "window.dcm")
    img = load_image(tmp_path / "window.dcm")
    assert (img[raw <= 10000] == 0).all() and (img[raw >= 14000] == 255).all()
    inside = (raw > 10500) & (raw < 13500)
    expected = np.round((raw[inside] - 10000) / 4000 * 255)
    assert np.abs(img[inside] - expected).max() <= 1


def test_dicom_without_suffix_and_resized(radiograph, tmp_path):
    shutil.copy(radiograph, tmp_path / "image")
    assert is_dicom(tmp_path / "image")
    small = load_resized(tmp_path / "image", 64)
    assert small.shape == (64, 64) and small.dtype == np.uint8


def test_png_16_bit_and_rgb_jpeg(tmp_path):
    ramp = (np.arange(40 * 30).reshape(40, 30) * 50).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255 and img.shape == (40, 30)
    rgb = np.zeros((50, 40, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=95)
    assert load_image(tmp_path / "b.jpg").shape == (50, 40)
    resized = load_resized(tmp_path / "b.jpg", 16)
    assert (
        resized.shape == (16, 16)
        and abs(int(resized.mean()) - int(load_image(tmp_path / "b.jpg").mean())) <= 2
    )


def test_resolve_image_path(tmp_path):
    (tmp_path / "prepare.json").write_text(json.dumps({"image_root": str(tmp_path / "data")}))
    assert resolve_image_path(tmp_path, "train/x.jpg") == tmp_path / "data" / "train" / "x.jpg"
    assert resolve_image_path(tmp_path, "/abs/x.jpg").as_posix() == "/abs/x.jpg"
    with pytest.raises(InputError, match="no image_root"):
        resolve_image_path(tmp_path / "elsewhere", "train/x.jpg")


def test_check_images_finds_missing_and_unreadable(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    problems = check_images([tmp_path / "ok.png", tmp_path / "bad.jpg", tmp_path / "gone.jpg"])
    assert problems[str(tmp_path / "gone.jpg")] == "missing"
    assert problems[str(tmp_path / "bad.jpg")].startswith("unreadable")
    assert str(tmp_path / "ok.png") not in problems
