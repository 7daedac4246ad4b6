"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s docs``, ``nox -s demo``,
``nox -s bench``, ``nox -s gpu`` (on a machine with a CUDA GPU).

Sessions run in the current environment (``pip install -e '.[dev]'`` first): torch is a
multi-GB install that must match torchvision, so we do not rebuild it per session.
"""

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit, integration, end-to-end multiruns)."""
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site (mkdocs.yml) into site/; a broken link or anchor fails the build."""
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def demo(session: nox.Session) -> None:
    """The quick start's demo: a real architecture search on digits, into ./mlflow.db."""
    session.run("python", "pipelines/vision.py", "-m", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks that print tables: sweeper overhead vs Hydra's basic sweeper, parallel
    throughput, the demo, pruning (ASHA vs none), strategies on NAS-Bench-201, zero-cost proxies
    vs training, the learned predictor, one-shot NAS (ENAS included), Once-for-All, the elastic
    supernet estimator, HAT and streaming image folders."""
    session.run("python", "tests/benchmarks/overhead.py", *session.posargs)
    session.run("python", "tests/benchmarks/throughput.py")
    session.run("python", "tests/benchmarks/demo.py")
    session.run("python", "tests/benchmarks/pruning.py")
    session.run("python", "tests/benchmarks/oneshot.py")
    # ENAS's derived cell vs the best of 20 random cells vs DARTS, and whether it collapses.
    session.run("python", "tests/benchmarks/enas.py")
    session.run("nas-plugin", "bench", "nb201", "--seeds", "30")
    # PNAS beside random / evolution / bo at 25, 50 and 100 queries.
    session.run(
        "nas-plugin", "bench", "nb201", "--seeds", "30", "--queries", "100",
        "--checkpoints", "25,50,100", "--strategy", "random", "--strategy", "evolution",
        "--strategy", "bo", "--strategy", "pnas",
    )  # fmt: skip
    # Zero-cost proxies vs 200 trained NB201 cells on digits, and the pre-screen's saving.
    session.run("python", "tests/benchmarks/proxies.py", "--archs", "200", "--search-seeds", "20")
    # The learned predictor's held-out rank correlation on NB201, and a predictor pre-screen.
    session.run("python", "tests/benchmarks/predictor.py", "--seeds", "10", "--search-seeds", "20")
    # The zero-cost warm-up in real NB201 sweeps (bo, 50 trials, live proxies), with and without.
    session.run("python", "tests/benchmarks/warmup_sweep.py", "--seeds", "5")
    session.run("python", "tests/benchmarks/ofa.py")
    # Hierarchical evolution vs random search over the hierarchical space on digits.
    session.run("python", "tests/benchmarks/hierarchical.py", "--trials", "16")
    # EfficientNet compound scaling on digits: the constrained grid, then phi = 2, 3.
    session.run("python", "tests/benchmarks/compound.py")
    # MobileNetV3-Small built by model=mbconv vs timm's, block for block, and their cost.
    session.run("python", "tests/benchmarks/mobilenetv3.py")
    # estimator=supernet on the mbconv space: cost, and inherited vs stand-alone ranking.
    session.run("python", "tests/benchmarks/elastic_supernet.py")
    # HAT on the embedded text set: latency predictor error, inherited vs stand-alone Kendall tau.
    session.run("python", "tests/benchmarks/hat.py")
    # Streaming image folders: images/s with 0 vs 2 DataLoader workers; peak RSS 2k -> 20k images.
    session.run("python", "tests/benchmarks/streaming.py")
    # Segmentation: the searched Auto-DeepLab vs a hand-designed baseline vs a 1-layer model (mIoU).
    session.run("python", "tests/benchmarks/segmentation.py")
    # Detection: the searched SpineNet-style FCOS vs a ResNet-like + FPN baseline (mAP).
    session.run("python", "tests/benchmarks/detection.py")
    # Zero-cost proxies on both dense tasks: rank correlation with trained mIoU / mAP@.5.
    session.run("python", "tests/benchmarks/dense_proxies.py")
    # Weight-sharing detection search (SpineNet supernet), its best candidates retrained.
    session.run("python", "tests/benchmarks/detection_supernet.py")


@nox.session
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: the GPU tests (skipped elsewhere), then one table of images/s per trial
    (CPU 1 and 2 threads, CUDA fp32 and bf16) and the wall time of 8 trials, one per GPU."""
    session.run("python", "-m", "pytest", "-q", "-m", "gpu", "-n", "0", "tests/")
    session.run("python", "tests/benchmarks/gpu.py", *session.posargs)
