from __future__ import annotations

import importlib.resources

import pytest
import torch
from PIL import Image

import reprinvert as ri
from reprinvert import data

QUANT = 0.5 / 255 + 1e-6  # 8-bit rounding


def _stripes(path, width=40, height=20):
    """Blue | red | green vertical stripes (a quarter, a half, a quarter of the width)."""
    img = Image.new("RGB", (width, height), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, width // 4, height))
    img.paste((0, 255, 0), (width - width // 4, 0, width, height))
    img.save(path)
    return path


# ---------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("shape", [(3, 9, 7), (1, 3, 9, 7), (1, 9, 7)])
def test_save_load_round_trip(tmp_path, shape) -> None:
    img = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    path = data.save_image(img, tmp_path / "sub" / "a.png")
    assert path == tmp_path / "sub" / "a.png"
    channels = shape[-3]
    back = data.load_image(path, mode="RGB" if channels == 3 else "L")
    assert back.shape == (1, channels, 9, 7) and back.dtype == torch.float32
    assert float((back - img.reshape(back.shape)).abs().max()) <= QUANT


def test_save_image_clamps_and_zeroes_nan(tmp_path) -> None:
    img = torch.tensor([-1.0, 0.25, 2.0, float("nan")]).reshape(1, 1, 4).expand(3, 1, 4)
    back = data.load_image(data.save_image(img, tmp_path / "c.png"))
    assert torch.allclose(back[0, 0, 0], torch.tensor([0.0, 0.25, 1.0, 0.0]), atol=QUANT)


def test_save_image_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"save_image writes one image, got a batch of shape \(2, 3, 4, 4\)"):
        data.save_image(torch.rand(2, 3, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"C = 1 or 3, got shape \(2, 4, 4\)"):
        data.save_image(torch.rand(2, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"cannot write image '.*x\.nosuchformat'"):
        data.save_image(torch.rand(3, 4, 4), tmp_path / "x.nosuchformat")


def test_resize_centre_crop(tmp_path) -> None:
    path = _stripes(tmp_path / "wide.png")
    square = data.load_image(path, size=8)  # the centred 20x20 square is all red
    assert square.shape == (1, 3, 8, 8)
    assert torch.allclose(square[0], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 8, 8), atol=QUANT)
    assert torch.equal(data.load_image(path, size=(8, 8)), square)
    whole = data.load_image(path, size=(5, 10))  # same aspect as the file: nothing cropped, blue on the left
    assert whole.shape == (1, 3, 5, 10)
    assert float(whole[0, 2, :, 0].min()) > 0.9 and float(whole[0, 1, :, -1].min()) > 0.9
    assert data.load_image(path).shape == (1, 3, 20, 40)
    grey = data.load_image(path, size=(6, 4), mode="L")
    assert grey.shape == (1, 1, 6, 4)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path) -> None:
    import numpy as np

    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    back = data.load_image(tmp_path / "deep.png", mode="L")
    assert torch.allclose(back.flatten(), torch.tensor([0.0, 0.5, 1.0]), atol=1e-4)


def test_load_image_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no image file at '.*missing\.png'"):
        data.load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image '.*notes\.png': not an image format"):
        data.load_image(tmp_path / "notes.png")
    with pytest.raises(ValueError, match=r"cannot read image '.*': it is a folder; use load_images"):
        data.load_image(tmp_path)
    _stripes(tmp_path / "ok.png")
    with pytest.raises(ValueError, match=r"size=0: expected None, a positive int"):
        data.load_image(tmp_path / "ok.png", size=0)
    with pytest.raises(ValueError, match=r"size=\(4, 4, 4\)"):
        data.load_image(tmp_path / "ok.png", size=(4, 4, 4))
    with pytest.raises(ValueError, match=r"mode='RGBA': expected one of \['RGB', 'L'\]"):
        data.load_image(tmp_path / "ok.png", mode="RGBA")


def test_load_images_folder_sorted_and_lists(tmp_path) -> None:
    for name, v in (("b.png", 200), ("a.jpg", 10), ("c.PNG", 100)):
        Image.new("RGB", (6, 6), (v, v, v)).save(tmp_path / name, format="PNG" if "png" in name.lower() else "JPEG")
    (tmp_path / "notes.txt").write_text("skipped: not an image extension")
    (tmp_path / "sub").mkdir()
    batch = data.load_images(tmp_path)
    assert batch.shape == (3, 3, 6, 6)
    assert [round(float(b.mean()) * 255) for b in batch] == [10, 200, 100]  # a.jpg, b.png, c.PNG
    assert data.load_images(tmp_path, size=4).shape == (3, 3, 4, 4)
    listed = data.load_images([tmp_path / "c.PNG", str(tmp_path / "a.jpg")], size=2)
    assert [round(float(b.mean()) * 255) for b in listed] == [100, 10]
    assert torch.equal(data.load_images(tmp_path / "b.png"), data.load_image(tmp_path / "b.png"))


def test_load_images_errors(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"no image files in folder '.*empty'"):
        data.load_images(empty)
    with pytest.raises(ValueError, match=r"paths_or_folder is an empty list"):
        data.load_images([])
    Image.new("RGB", (6, 6)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 6)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"different sizes \(H, W\) \[\(6, 5\), \(6, 6\)\]; pass size="):
        data.load_images(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no image file at '.*nope\.png'"):
        data.load_images([tmp_path / "a.png", tmp_path / "nope.png"])


# ---------------------------------------------------------------------------------------------- bundled
def test_bundled_images() -> None:
    names = data.sample_names()
    assert names == ["astronaut", "chelsea", "coffee", "rocket"]
    x = data.sample_image()
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.std()) > 0.1  # a real photo, not a blank
    assert data.sample_image("chelsea", size=None).shape == (1, 3, 96, 96)
    assert data.sample_image("coffee", size=(24, 32)).shape == (1, 3, 24, 32)
    batch = data.sample_images(size=16)
    assert batch.shape == (4, 3, 16, 16)
    assert torch.equal(batch[1:2], data.sample_image("chelsea", size=16))
    with pytest.raises(ValueError, match=r"image='lena' is not a bundled image; available: astronaut, chelsea"):
        data.sample_image("lena")


def test_bundled_files_small_and_documented() -> None:
    folder = importlib.resources.files("reprinvert") / "_data"
    total = sum(len((folder / f"{n}.png").read_bytes()) for n in data.sample_names())
    assert total < 100_000
    readme = (folder / "README.md").read_text()
    for name in data.sample_names():
        assert f"`{name}.png`" in readme
    assert readme.count("public domain") + readme.count("CC0") >= 4


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_images_deterministic_smooth_in_range() -> None:
    a = data.synthetic_images(3, size=12, seed=5)
    assert a.shape == (3, 3, 12, 12) and a.dtype == torch.float32
    assert torch.equal(a, data.synthetic_images(3, size=12, seed=5))
    assert not torch.equal(a, data.synthetic_images(3, size=12, seed=6))
    flat = a.flatten(2)
    assert torch.equal(flat.amin(-1), torch.zeros(3, 3)) and torch.equal(flat.amax(-1), torch.ones(3, 3))
    big = data.synthetic_images(4, size=64, seed=0)
    step = (big[..., 1:] - big[..., :-1]).abs().mean()
    assert float(step) < 0.1  # smooth: neighbouring pixels are close (noise would give ~0.33)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(data.synthetic_images(3, size=12, seed=None, generator=g), a)
    assert data.synthetic_images(2, size=8, channels=1).shape == (2, 1, 8, 8)


def test_synthetic_images_errors() -> None:
    with pytest.raises(ValueError, match=r"n=0: expected a positive int"):
        data.synthetic_images(0)
    with pytest.raises(ValueError, match=r"channels=True: expected a positive int"):
        data.synthetic_images(1, channels=True)
    with pytest.raises(ValueError, match=r"seed=1 and generator=.* were both given"):
        data.synthetic_images(1, seed=1, generator=torch.Generator())


def test_global_rng_untouched(tmp_path) -> None:
    state = torch.get_rng_state()
    data.synthetic_images(2, size=8, seed=1)
    data.sample_images(size=8)
    ri.report.save_grid([torch.zeros(1, 3, 2, 2)], tmp_path / "g.png")
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------- grids
def test_grid_size_arithmetic() -> None:
    cols = [torch.rand(2, 3, 5, 4) for _ in range(3)]
    img = data.make_grid(cols, padding=1, scale=2)
    assert img.size == (3 * (4 * 2 + 1) + 1, 2 * (5 * 2 + 1) + 1)
    assert data.make_grid(cols, padding=0).size == (12, 10)
    labelled = data.make_grid(cols, padding=1, scale=2, column_labels=["a", "b", "c"])
    assert labelled.size[0] == img.size[0] and labelled.size[1] > img.size[1]
    rows = data.make_grid(cols, padding=1, scale=2, row_labels=["p", "q"])
    assert rows.size[1] == img.size[1] and rows.size[0] > img.size[0]


def test_grid_pixels_and_layouts() -> None:
    x = torch.zeros(2, 3, 2, 2)
    x[1] = 1.0  # row 0 black, row 1 white
    single = torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 2, 2)  # one green image for every row
    grey = torch.full((2, 1, 2, 2), 0.5)
    img = data.make_grid([x, single, grey], padding=1, scale=3, background=128)
    assert img.size == (3 * 7 + 1, 2 * 7 + 1)
    assert img.getpixel((0, 0)) == (128, 128, 128)  # padding
    assert img.getpixel((1, 1)) == (0, 0, 0) and img.getpixel((3, 6)) == (0, 0, 0)  # row 0, col 0, 3x3 upscaled
    assert img.getpixel((1, 8)) == (255, 255, 255)  # row 1, col 0
    assert img.getpixel((9, 1)) == (0, 255, 0) and img.getpixel((9, 8)) == (0, 255, 0)  # broadcast column
    assert img.getpixel((16, 1)) == (128, 128, 128)  # grey column shown in grey
    stacked = torch.stack([x, x.flip(0)], dim=1)  # (R, K, C, H, W)
    assert data.make_grid(stacked).tobytes() == data.make_grid([x, x.flip(0)]).tobytes()


def test_save_grid(tmp_path) -> None:
    """report.save_grid writes a grid of tensors (Pillow's, default scale 4 and padding 2) as well as a sweep's;
    data.save_grid, the former tensor-only name, still writes the same file and warns."""
    from reprinvert.data._io import write_grid

    cols = [torch.rand(2, 3, 5, 5) for _ in range(3)]
    path = ri.report.save_grid(cols, tmp_path / "out" / "g.png", column_labels=["x", "layer1", "a very long label"])
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] == 3 * (5 * 4 + 2) + 2  # default scale 4, padding 2
    unlabelled = write_grid(cols, tmp_path / "u.png", scale=1, padding=0)
    with Image.open(unlabelled) as img:
        assert img.size == (15, 10)
    with pytest.warns(DeprecationWarning, match=r"use reprinvert.report.save_grid"):
        old = data.save_grid(cols, tmp_path / "old.png", column_labels=["x", "layer1", "a very long label"])
    assert old.read_bytes() == path.read_bytes()


def test_grid_errors() -> None:
    cols = [torch.rand(2, 3, 4, 4) for _ in range(3)]
    with pytest.raises(ValueError, match=r"column_labels has 1 labels for 3 columns"):
        data.make_grid(cols, column_labels=["a"])
    with pytest.raises(ValueError, match=r"row_labels has 3 labels for 2 rows"):
        data.make_grid(cols, row_labels=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"same number of images .* got shapes \[\(1, 3, 4, 4\), \(1, 3, 5, 5\)\]"):
        data.make_grid([torch.rand(1, 3, 4, 4), torch.rand(1, 3, 5, 5)])
    with pytest.raises(ValueError, match=r"same number of images"):
        data.make_grid([torch.rand(2, 3, 4, 4), torch.rand(3, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"1 or 3 channels"):
        data.make_grid([torch.rand(1, 2, 4, 4)])
    with pytest.raises(ValueError, match=r"must be \(R, K, C, H, W\)"):
        data.make_grid(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"images is empty"):
        data.make_grid([])
    with pytest.raises(ValueError, match=r"scale=0: expected a positive int"):
        data.make_grid(cols, scale=0)
