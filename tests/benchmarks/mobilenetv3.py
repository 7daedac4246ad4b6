"""MobileNetV3-Small in the mbconv notation vs timm's own, block for block, and their cost.

python tests/benchmarks/mobilenetv3.py

Builds ``mobilenetv3_small_config`` with our builder and timm's ``mobilenetv3_small_100``
(random weights, 10 classes, 3x224x224 and 1x16x16 inputs) and prints blocks that match,
parameters, FLOPs and CPU latency (batch 1) of each.
"""

from __future__ import annotations

from pathlib import Path

import timm
from omegaconf import OmegaConf

from nas_plugin.hardware.cost import measure_cost
from nas_plugin.models import build_model
from nas_plugin.models.mbconv import mobilenetv3_small_config

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    base = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "mbconv.yaml"))
    print("\nMobileNetV3-Small: model=mbconv (mobilenetv3_small_config) vs timm\n")
    print("| input | model | blocks equal to timm's | params | MFLOPs | latency (ms) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for chans, size in ((3, 224), (1, 16)):
        ours = build_model(mobilenetv3_small_config(base), num_classes=10, in_chans=chans)
        theirs = timm.create_model(
            "mobilenetv3_small_100", pretrained=False, num_classes=10, in_chans=chans
        )
        our_blocks = [repr(b) for stage in ours.blocks for b in stage]
        their_blocks = [repr(b) for stage in list(theirs.blocks)[:-1] for b in stage]
        same = sum(a == b for a, b in zip(our_blocks, their_blocks, strict=True))
        for name, model in (("mbconv", ours), ("timm", theirs)):
            cost = measure_cost(model, (chans, size, size), latency_repeats=20)
            print(
                f"| {chans}x{size}x{size} | {name} | {same}/{len(their_blocks)} | "
                f"{int(cost['params']):,} | {cost['flops'] / 1e6:.1f} | {cost['latency_ms']:.2f} |"
            )


if __name__ == "__main__":
    main()
