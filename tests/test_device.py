"""Where a trial computes (train.device / precision / channels_last) and how its images are read
(streamed image folders, DataLoader workers, augmentation), on this CPU machine."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from nas_plugin.hardware.device import DeviceError, Runtime, resolve_device, resolve_precision
from nas_plugin.tasks.vision import channel_stats, run_vision_trial
from nas_plugin.tasks.vision_data import (
    ImageFileDataset,
    augmentation,
    check_task_config,
    load_vision_data,
)
from nas_plugin.tracking.reporter import mlflow_reporting

CONF = Path(__file__).resolve().parent.parent / "conf"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@no_cuda
def test_auto_device_is_the_cpu_without_an_accelerator() -> None:
    if torch.backends.mps.is_available():
        pytest.skip("MPS machine")
    runtime = Runtime.from_config({"device": "auto", "precision": "auto"})
    assert runtime.device == torch.device("cpu")
    assert (runtime.precision, runtime.channels_last, runtime.compile) == ("32", False, False)
    assert runtime.describe()["runtime.device"] == "cpu"


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_an_error_that_names_the_key_value_and_what_is_here(spec: str) -> None:
    with pytest.raises(DeviceError, match=rf"train.device = '{spec}' is not available.*has: cpu"):
        resolve_device(spec)


def test_unknown_devices_and_precisions_list_what_is_allowed() -> None:
    with pytest.raises(DeviceError, match="train.device = 'tpu' is not allowed: expected one of"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="train.precision = 'int8' is not allowed"):
        resolve_precision("int8", torch.device("cpu"))
    with pytest.raises(DeviceError, match="fp16 mixed precision needs CUDA or MPS"):
        resolve_precision("16-mixed", torch.device("cpu"))
    with pytest.raises(DeviceError, match="train.channels_last = 'yes'"):
        Runtime.from_config({"device": "cpu", "channels_last": "yes"})


def digits_trial(tmp_path: Path, **train: object):
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": OmegaConf.load(CONF / "task" / "digits.yaml"),
            "model": OmegaConf.load(CONF / "model" / "mbconv.yaml"),
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.005, "device": "cpu", **train},
            "hardware": {"measure": False},
            "log_model": False,
        }
    )
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    with mlflow.start_run() as run, mlflow_reporting():
        results = run_vision_trial(cfg)
    return results, mlflow.get_run(run.info.run_id).data.tags


def test_bf16_and_channels_last_train_on_the_cpu_and_the_run_says_so(tmp_path: Path) -> None:
    # One short epoch: bf16 matmuls are emulated, and slow, on CPUs without AMX.
    results, tags = digits_trial(
        tmp_path, precision="bf16", channels_last=True, epochs=1, train_fraction=0.5
    )
    assert tags["runtime.device"] == "cpu"
    assert tags["runtime.precision"] == "bf16"
    assert tags["runtime.channels_last"] == "true"
    assert results["val_accuracy"] > 0.3  # 10 classes: chance is 0.1


def write_png_folder(root: Path, per_class: int, size: int = 8) -> None:
    """Four folders of ``per_class`` small noisy PNGs, told apart by which half is bright (top,
    bottom, both, neither): a mirror flip keeps the class."""
    rng = np.random.default_rng(0)
    half = size // 2
    for label, rows in enumerate([slice(0, half), slice(half, size), slice(0, size), None]):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            if rows is not None:
                pixels[rows] += 180
            Image.fromarray(pixels).save(folder / f"{i}.png")


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pngs")
    write_png_folder(root, per_class=500)  # 2,000 images
    return root


def folder_task(root: Path, **overrides: object):
    return OmegaConf.merge(
        OmegaConf.load(CONF / "task" / "image_folder.yaml"),
        {"root": str(root), "resolution": 8, **overrides},
    )


def test_a_folder_of_2000_pngs_streams_through_two_workers(png_folder: Path) -> None:
    data = load_vision_data(folder_task(png_folder, num_workers=2, augment="none"))
    assert isinstance(data.train, ImageFileDataset)
    assert len(data.train) + len(data.val) + len(data.test) == 2000
    # Only paths are held: the split pickles (as it is sent to workers) to well under the size
    # of its decoded pixels.
    pixels = len(data.train) * 3 * 8 * 8
    assert len(pickle.dumps(data.train)) < pixels / 2

    loader = data.loader(data.train, batch_size=128, shuffle=True, seed=3)
    assert loader.num_workers == 2 and loader.persistent_workers
    seen = torch.cat([labels for _, labels in loader])
    assert sorted(seen.tolist()) == sorted(data.train.labels.tolist())
    # Decoded in the workers exactly as in this process, in the same seeded order.
    in_process = load_vision_data(folder_task(png_folder, num_workers=0, augment="none"))
    ordered = in_process.loader(in_process.train, batch_size=128, shuffle=True, seed=3)
    again = data.loader(data.train, batch_size=128, shuffle=True, seed=3)
    for (a, la), (b, lb) in zip(again, ordered, strict=True):
        assert torch.equal(la, lb) and torch.equal(a, b)


def test_augmented_batches_repeat_with_the_seed_and_change_with_it(png_folder: Path) -> None:
    data = load_vision_data(folder_task(png_folder, num_workers=2, augment="crop_flip"))
    train = data.augmented_train
    first = next(iter(data.loader(train, 64, shuffle=True, seed=1)))[0]
    again = next(iter(data.loader(train, 64, shuffle=True, seed=1)))[0]
    plain = next(iter(data.loader(data.train, 64, shuffle=True, seed=1)))[0]
    assert torch.equal(first, again)
    assert first.shape == plain.shape == (64, 3, 8, 8)
    assert not torch.equal(first, plain)
    assert data.train.transform is None  # statistics and BN re-estimation see plain images


def test_streamed_statistics_match_the_exact_ones(png_folder: Path) -> None:
    data = load_vision_data(folder_task(png_folder, num_workers=0, augment="none"))
    mean, std = channel_stats(data.train, max_images=len(data.train))
    images = torch.stack([data.train[i][0] for i in range(len(data.train))]).double()
    assert torch.allclose(mean.double(), images.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(std.double(), images.std(dim=(0, 2, 3), unbiased=False), atol=1e-5)


def test_a_trial_trains_on_a_streamed_folder_with_workers(png_folder: Path, tmp_path: Path):
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "task": folder_task(png_folder, num_workers=2, augment="flip"),
            "model": OmegaConf.load(CONF / "model" / "mbconv.yaml"),
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.005, "device": "auto"},
            "hardware": {"measure": False},
            "log_model": False,
        }
    )
    results = run_vision_trial(cfg)
    assert results["val_accuracy"] > 0.6  # 4 classes: chance is 0.25


def write_fake_cifar10(root: Path, per_batch: int = 40) -> None:
    """``cifar-10-batches-py`` in CIFAR-10's own pickle format, with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]
    for name in [*names, "test_batch"]:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": [f"c{i}" for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))


def test_cifar10_reads_through_the_loader_with_augmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets import CIFAR10

    write_fake_cifar10(tmp_path)
    # Our files are not the published ones: skip torchvision's MD5 checks only.
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *_: True)
    task = OmegaConf.merge(
        OmegaConf.load(CONF / "task" / "cifar10.yaml"),
        {"root": str(tmp_path), "download": False, "val_fraction": 0.25},
    )
    data = load_vision_data(task)
    assert (len(data.train), len(data.val), len(data.test)) == (150, 50, 40)
    assert data.image_shape == (3, 32, 32) and data.class_names[0] == "c0"
    images, labels = next(iter(data.loader(data.augmented_train, 32, shuffle=True, seed=0)))
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and labels.dtype == torch.int64


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"augment": "mixup"}, "task.augment = 'mixup' is not allowed: expected one of none"),
        ({"num_workers": -1}, "task.num_workers = -1 is not allowed"),
        ({"pin_memory": "maybe"}, "task.pin_memory = 'maybe' is not allowed"),
    ],
)
def test_bad_loader_options_are_named(override: dict, message: str) -> None:
    task = OmegaConf.merge(OmegaConf.load(CONF / "task" / "digits.yaml"), override)
    with pytest.raises(ValueError, match=message):
        check_task_config(task)


def test_augmentations_keep_the_native_size() -> None:
    image = torch.rand(3, 8, 8)
    for name in ("flip", "crop", "crop_flip"):
        transform = augmentation({"dataset": "image_folder", "resolution": 8, "augment": name})
        assert transform(image).shape == (3, 8, 8)
    assert augmentation({"dataset": "digits", "augment": "none"}) is None


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], ids=["cpu", "cuda"]
)
def test_log_model_of_a_model_on_the_device_loads_and_predicts_without_a_gpu(
    tmp_path: Path, device: str
) -> None:
    from conftest import cpu_only_predictions
    from sklearn.datasets import load_digits

    from nas_plugin.models import build_model
    from nas_plugin.tracking.model_logging import log_model

    torch.manual_seed(0)
    model = build_model(OmegaConf.load(CONF / "model" / "mbconv.yaml"), 10, 1).to(device)
    x = (load_digits().images[:8] / 16.0).astype(np.float32)[:, None]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        model_uri = log_model(model, x[:4])
    assert next(model.parameters()).device.type == device  # back where it trains
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x).to(device)).argmax(1).cpu()
    predicted = cpu_only_predictions(uri, model_uri, x, tmp_path)
    assert predicted["pyfunc"] == predicted["torch"] == [8, 10]
    assert predicted["agree"] == 1.0 and predicted["argmax"] == expected.tolist()


@pytest.mark.parametrize(
    ("capability", "auto", "bf16_allowed"), [((7, 5), "16-mixed", False), ((9, 0), "bf16", True)]
)
def test_precision_auto_takes_bf16_only_where_the_gpu_computes_it(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], auto: str, bf16_allowed: bool
) -> None:
    # torch.cuda.is_bf16_supported() says yes on a T4 or V100 too (emulated): the choice must
    # follow the chosen device's compute capability.
    asked: list[torch.device] = []
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    gpu = torch.device("cuda", 1)
    assert resolve_precision("auto", gpu) == auto
    assert asked[0] == gpu  # the trial's cuda:N, not the current device
    if bf16_allowed:
        assert resolve_precision("bf16", gpu) == "bf16"
    else:
        with pytest.raises(DeviceError, match=r"Tesla T4 \(compute capability 7.5\) has no native"):
            resolve_precision("bf16", gpu)
