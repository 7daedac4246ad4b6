"""Other NB201 tables built from the packaged one, to check that settings are not fitted to
CIFAR-10 test accuracy alone (``nas-plugin bench nb201 --table PATH --metric COL``).

NAS-Bench-201's CIFAR-100 and ImageNet16-120 columns are not packaged (see
``nas_plugin/data/README.md``), so the checks use landscapes derived from what is:

- ``noisy_val``: the CIFAR-10 test accuracy plus seeded Gaussian noise (std 0.3 points, about
  the spread between NB201's training seeds), a stand-in validation column to search on while
  reporting ``cifar10_test_acc`` (the papers' protocol);
- ``permuted_acc``: CIFAR-10 accuracy with the four non-``none`` operations renamed
  (``skip -> conv3x3 -> avg_pool -> conv1x1 -> skip``), a landscape whose best cells look
  nothing like CIFAR-10's (mostly ``skip_connect``); ``permuted_zc_synflow`` and
  ``permuted_zc_naswot`` are the packaged zero-cost scores renamed the same way, so a
  zero-cost warm-up can be checked on it (``--proxy permuted_zc_synflow,permuted_zc_naswot``);
- ``lat_ms_gold_6226``: latency, minimised (``--minimize``);
- ``acc_per_ms``: accuracy minus 0.5 points per millisecond of latency, a trade-off metric.

    python -m nas_plugin.bench.transformed_tables OUT.csv.gz
"""

from __future__ import annotations

import csv
import gzip
import random
import sys
from pathlib import Path

from nas_plugin.bench.harness import ZERO_COST_TABLE
from nas_plugin.benchmark_table import BenchmarkTable
from nas_plugin.space import nb201

RENAME = {
    "skip_connect": "nor_conv_3x3",
    "nor_conv_3x3": "avg_pool_3x3",
    "avg_pool_3x3": "nor_conv_1x1",
    "nor_conv_1x1": "skip_connect",
    "none": "none",
}


def build(out: Path) -> Path:
    table = BenchmarkTable.load("nb201_cifar10")
    zero_cost = BenchmarkTable.load(str(ZERO_COST_TABLE))
    rng = random.Random(0)
    columns = ["arch_str", "cifar10_test_acc", "noisy_val", "permuted_acc"]
    columns += ["lat_ms_gold_6226", "acc_per_ms", "permuted_zc_synflow", "permuted_zc_naswot"]
    with gzip.open(out, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for arch in nb201.all_arch_strs():
            row = table.lookup(arch)
            renamed = nb201.to_arch_str([RENAME[op] for op in nb201.from_arch_str(arch)])
            acc, latency = row["cifar10_test_acc"], row["lat_ms_gold_6226"]
            renamed_proxies = zero_cost.lookup(renamed)
            writer.writerow(
                [
                    arch,
                    acc,
                    round(acc + rng.gauss(0, 0.3), 4),
                    table.lookup(renamed)["cifar10_test_acc"],
                    latency,
                    round(acc - 0.5 * latency, 4),
                    renamed_proxies["zc_synflow"],
                    renamed_proxies["zc_naswot"],
                ]
            )
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
