"""Images in and out: files and folders through Pillow, bundled real photos, synthetic images, PNG grids.

Every tensor here is float32 in [0, 1], laid out ``(B, C, H, W)`` with C = 3 (RGB) or 1 (grey).

The bundled photos (:func:`sample_image`) are four public-domain / CC0 pictures from scikit-image's sample
data (astronaut, chelsea, coffee, rocket), stored at 96x96 inside the package so they work offline; sources
and licences are in ``reprinvert/_data/README.md``.

Example:
    >>> import reprinvert as ri
    >>> x = ri.data.sample_image("astronaut", size=32)
    >>> x.shape, x.dtype
    (torch.Size([1, 3, 32, 32]), torch.float32)
    >>> ri.data.synthetic_images(2, size=8, seed=1).shape
    torch.Size([2, 3, 8, 8])
"""

from ._datasets import bundled_patches, load_cifar10, load_npy, patch_dataset
from ._examples import SKIMAGE_PHOTOS, sample_image, sample_images, sample_names, skimage_images, synthetic_images
from ._io import IMAGE_EXTENSIONS, image_paths, load_image, load_images, make_grid, save_grid, save_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "SKIMAGE_PHOTOS",
    "bundled_patches",
    "image_paths",
    "load_cifar10",
    "load_image",
    "load_images",
    "load_npy",
    "make_grid",
    "patch_dataset",
    "sample_image",
    "sample_images",
    "sample_names",
    "save_grid",
    "save_image",
    "skimage_images",
    "synthetic_images",
]
