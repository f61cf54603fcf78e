from __future__ import annotations

import pytest
import torch
from PIL import Image

from reprinvert import data


def test_save_load_round_trip(tmp_path) -> None:
    img = data.synthetic_images(1, size=16, seed=3)
    path = data.save_image(img, tmp_path / "sub" / "a.png")
    back = data.load_image(path)
    assert back.shape == (1, 3, 16, 16) and back.dtype == torch.float32
    assert float((back - img).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit quantisation only


def test_resize_and_grey(tmp_path) -> None:
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "wide.png")
    sq = data.load_image(tmp_path / "wide.png", size=8)
    assert sq.shape == (1, 3, 8, 8)
    assert torch.allclose(sq[0, 0], torch.ones(8, 8)) and float(sq[0, 1:].abs().max()) == 0.0
    rect = data.load_image(tmp_path / "wide.png", size=(5, 7), mode="L")
    assert rect.shape == (1, 1, 5, 7)


def test_folder_loading_sorted_and_errors(tmp_path) -> None:
    for i, v in enumerate((10, 200)):
        Image.new("RGB", (6, 6), (v, v, v)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    batch = data.load_images(tmp_path, size=4)
    assert batch.shape == (2, 3, 4, 4)
    assert float(batch[0].mean()) < float(batch[1].mean())
    with pytest.raises(FileNotFoundError, match=r"no image files .* in folder"):
        data.load_images(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no image file at '.*missing.png'"):
        data.load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"cannot read image '.*notes.txt'"):
        data.load_image(tmp_path / "notes.txt")
    Image.new("RGB", (5, 5)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match=r"different sizes .* pass size="):
        data.load_images(tmp_path, size=None)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_bundled_images() -> None:
    names = data.sample_names()
    assert names == ["astronaut", "chelsea", "coffee", "rocket"]
    x = data.sample_image("chelsea", size=32)
    assert x.shape == (1, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert float(x.std()) > 0.05  # a real photo, not a blank
    assert data.sample_images(size=16).shape == (4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"image='lena' is not a bundled image; available: \['astronaut'"):
        data.sample_image("lena")


def test_synthetic_images_deterministic_and_rng_untouched() -> None:
    state = torch.get_rng_state()
    a = data.synthetic_images(3, size=12, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, data.synthetic_images(3, size=12, seed=5))
    assert not torch.equal(a, data.synthetic_images(3, size=12, seed=6))
    assert a.shape == (3, 3, 12, 12) and float(a.min()) == 0.0 and float(a.max()) == 1.0
    with pytest.raises(ValueError, match=r"n=0"):
        data.synthetic_images(0)


def test_grid_geometry(tmp_path) -> None:
    cols = [torch.rand(2, 3, 5, 5) for _ in range(3)]
    img = data.make_grid(cols, padding=1, scale=2)
    assert img.size == (3 * 10 + 4 * 1, 2 * 10 + 3 * 1)
    labelled = data.make_grid(cols, padding=1, scale=2, column_labels=["a", "b", "c"])
    assert labelled.size[1] == img.size[1] + 14
    path = data.save_grid(cols, tmp_path / "g.png", column_labels=["x", "1", "2"], row_labels=["p", "q"])
    assert Image.open(path).size[0] > 0
    with pytest.raises(ValueError, match=r"column_labels has 1 labels for 3 columns"):
        data.make_grid(cols, column_labels=["a"])
    with pytest.raises(ValueError, match=r"every column must have one shape"):
        data.make_grid([torch.rand(1, 3, 4, 4), torch.rand(1, 3, 5, 5)])
