"""The training loop and the dataset helpers it feeds on (npy, CIFAR-10 batches, patch datasets)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import reprinvert as ri
from reprinvert import data
from reprinvert.models import ConvAutoencoder, ConvClassifier
from reprinvert.train import TrainResult, load_weights, save_weights, train


def _images(n: int = 16, size: int = 8) -> torch.Tensor:
    return ri.data.synthetic_images(n, size=size, seed=3)


def test_train_lowers_the_copy_loss_and_records_history() -> None:
    model = ConvAutoencoder(channels=(8, 16))
    x = _images(32)
    with torch.no_grad():
        before = float(((model(x) - x) ** 2).mean())
    result = train(model, x, epochs=15, batch_size=8, lr=3e-3, progress=False, val=x[:4])
    assert isinstance(result, TrainResult)
    assert len(result.history) == 15 and result.steps == 15 * 4
    assert result.history[-1].val_loss is not None
    assert result.final_loss < before / 2


def test_train_is_deterministic_and_leaves_global_rng_and_flags_alone() -> None:
    x = _images()
    models = [ConvAutoencoder(channels=(4, 8), seed=1) for _ in range(2)]
    models[0].eval()
    flags = [m.training for m in models[0].modules()]
    state = torch.get_rng_state()
    calls: list[int] = []

    def corrupt(b: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        calls.append(b.shape[0])
        return ri.corruptions.noise_mix(b, alpha=0.5, generator=g)

    for m in models:
        train(m, x, epochs=2, batch_size=5, corrupt=corrupt, progress=False, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in models[0].modules()] == flags
    assert all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))
    assert calls[:4] == [5, 5, 5, 1]  # the last, smaller batch is used too


def test_train_classifier_with_targets_and_max_steps() -> None:
    model = ConvClassifier(widths=(4,), strides=(1,), classes=3)
    x = _images(12)
    y = torch.arange(12) % 3
    result = train(model, x, targets=y, loss="cross_entropy", epochs=5, batch_size=4, max_steps=7, progress=False)
    assert result.steps == 7


def test_train_errors() -> None:
    model = ConvAutoencoder(channels=(4,))
    with pytest.raises(ValueError, match="epochs=0"):
        train(model, _images(), epochs=0, progress=False)
    with pytest.raises(ValueError, match="needs targets"):
        train(model, _images(), loss="cross_entropy", progress=False)
    with pytest.raises(ValueError, match="targets has 3 samples"):
        train(model, _images(), targets=torch.zeros(3), progress=False)


def test_save_and_load_weights_round_trip(tmp_path: Path) -> None:
    a, b = ConvAutoencoder(channels=(4,), seed=1), ConvAutoencoder(channels=(4,), seed=2)
    p = save_weights(a, tmp_path / "w" / "a.pt")
    load_weights(b, p)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(FileNotFoundError):
        load_weights(b, tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------- data
def test_load_npy_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", nhwc)
    t = data.load_npy(tmp_path / "a.npy")
    assert t.shape == (5, 3, 6, 7) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(nhwc).permute(0, 3, 1, 2).float() / 255)
    assert data.load_npy(tmp_path / "a.npy", limit=2).shape == (2, 3, 6, 7)
    nchw = rng.random((2, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "b.npy", nchw)
    assert torch.equal(data.load_npy(tmp_path / "b.npy", layout="nchw"), torch.from_numpy(nchw))
    np.save(tmp_path / "c.npy", rng.random((2, 4, 4)) * 5)
    with pytest.raises(ValueError, match="must be finite and lie in"):
        data.load_npy(tmp_path / "c.npy")
    with pytest.raises(FileNotFoundError):
        data.load_npy(tmp_path / "none.npy")


def test_load_cifar10_batches(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        (root / name).write_bytes(pickle.dumps(batch))
    x, y = data.load_cifar10(tmp_path, split="train")
    assert x.shape == (15, 3, 32, 32) and y.tolist() == [1, 2, 3] * 5
    x, y = data.load_cifar10(root, split="test", limit=2)
    assert x.shape == (2, 3, 32, 32) and float(x.max()) <= 1
    with pytest.raises(FileNotFoundError, match="downloads nothing"):
        data.load_cifar10(tmp_path / "nowhere")


def test_patch_dataset_cuts_real_crops() -> None:
    img = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12) / 1000
    patches = data.patch_dataset(img, size=4, count=20, flip=False, seed=1)
    assert patches.shape == (20, 3, 4, 4)
    assert torch.equal(patches, data.patch_dataset(img, size=4, count=20, flip=False, seed=1))
    for p in patches:  # each patch is a crop of one image
        found = any(
            torch.equal(img[k, :, i : i + 4, j : j + 4], p) for k in range(2) for i in range(7) for j in range(9)
        )
        assert found
    with pytest.raises(ValueError, match="smaller than size"):
        data.patch_dataset(img, size=8, scales=(0.5,))


def test_bundled_patches_are_in_range_and_skimage_is_optional() -> None:
    p = data.bundled_patches(size=16, count=12, seed=2)
    assert p.shape == (12, 3, 16, 16) and float(p.min()) >= 0 and float(p.max()) <= 1
    pytest.importorskip("skimage")
    assert data.skimage_images(["astronaut"], size=8).shape == (1, 3, 8, 8)


def test_a_checkpointed_training_resumes_bit_for_bit_and_refuses_another_call(tmp_path) -> None:
    """train(checkpoint=): interrupted after an epoch and rerun, the weights and history equal an uninterrupted
    run's exactly; a finished checkpoint returns without a step; a different call is refused."""
    from reprinvert.models import UNet

    data = torch.rand(40, 3, 8, 8)
    kw = dict(epochs=3, batch_size=8, lr=1e-3, seed=1, progress=False)
    plain = UNet(skip="none", base=4, depth=2, seed=0)
    ref = train(plain, data, **kw)

    class Stop(Exception):
        pass

    def stop_after_two(stats) -> None:
        if stats.epoch == 2:
            raise Stop

    path = tmp_path / "ck.pt"
    with pytest.raises(Stop):
        train(UNet(skip="none", base=4, depth=2, seed=0), data, callback=stop_after_two, checkpoint=path, **kw)
    resumed = UNet(skip="none", base=4, depth=2, seed=0)
    got = train(resumed, data, checkpoint=path, **kw)
    for (k, a), b in zip(plain.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h.loss for h in got.history] == [h.loss for h in ref.history] and got.steps == ref.steps
    again = UNet(skip="none", base=4, depth=2, seed=0)
    calls = []
    real_step = torch.optim.Adam.step
    try:
        torch.optim.Adam.step = lambda *a, **k: calls.append(1)  # type: ignore[method-assign]
        done = train(again, data, checkpoint=path, **kw)
    finally:
        torch.optim.Adam.step = real_step  # type: ignore[method-assign]
    assert calls == [] and done.steps == ref.steps
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match=r"different training call.*epochs"):
        train(UNet(skip="none", base=4, depth=2, seed=0), data, checkpoint=path, **{**kw, "epochs": 4})
    with pytest.raises(ValueError, match=r"different training call.*data"):
        train(UNet(skip="none", base=4, depth=2, seed=0), data + 0.01, checkpoint=path, **kw)


def test_training_progress_in_a_log_file_is_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Progress into a stream that is not a terminal (a log file): lines with an estimate, no cursor codes."""
    ae = ConvAutoencoder(channels=(4, 8))
    train(ae, torch.rand(40, 3, 8, 8), epochs=2, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("train ConvAutoencoder: 20/20 steps")
    assert "left" in lines[0]


def test_checkpoint_fingerprints_do_not_depend_on_the_thread_count_but_see_one_ulp() -> None:
    """A resume under another thread count must still recognise its own checkpoint (the fingerprint hashes bytes;
    it sums nothing), and a change of one float in the data must not pass."""
    from reprinvert._archive import differences, fingerprint

    data = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fingerprint(model=ConvAutoencoder(channels=(4, 8)), data=data, epochs=3)
        torch.set_num_threads(2)
        two = fingerprint(model=ConvAutoencoder(channels=(4, 8)), data=data, epochs=3)
    finally:
        torch.set_num_threads(threads)
    assert differences(one, two) == []
    nudged = data.clone()
    nudged[5, 1, 2, 3] = torch.nextafter(nudged[5, 1, 2, 3], torch.tensor(2.0))
    assert differences(one, fingerprint(model=ConvAutoencoder(channels=(4, 8)), data=nudged, epochs=3)) == ["data"]
    assert differences(one, fingerprint(model=ConvAutoencoder(channels=(4, 8)), data=data, epochs=4)) == ["epochs"]


def test_a_checkpoint_is_an_open_file_without_pickle(tmp_path) -> None:
    """The checkpoint is reprinvert's one result format: NumPy's .npz, readable with allow_pickle=False, holding
    the weights, the optimiser's moments and the history; a file that is not a checkpoint is refused by name."""
    import json

    path = tmp_path / "ck.npz"
    ae = ConvAutoencoder(channels=(4, 8))
    train(ae, torch.rand(8, 3, 8, 8), epochs=2, batch_size=4, progress=False, checkpoint=path)
    with np.load(path, allow_pickle=False) as f:
        names = set(f.files)
        meta = json.loads(str(f["__meta__"]))
    assert {f"model/{k}" for k in ae.state_dict()} <= names and "rng/batch" in names
    assert any(n.startswith("optimizer/state/") and n.endswith("exp_avg") for n in names)
    assert meta["format"] == "reprinvert.train-checkpoint/1" and meta["finished"] is True
    assert [h["epoch"] for h in meta["history"]] == [1, 2] and meta["fingerprint"]["epochs"] == 2
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ValueError, match=r"checkpoint '.*other.npz' cannot be read.*delete it"):
        train(ConvAutoencoder(channels=(4, 8)), torch.rand(8, 3, 8, 8), epochs=2, progress=False, checkpoint=other)
