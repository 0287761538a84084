"""`make bench`: every benchmark, results written under benchmarks/results/."""

from benchmarks import firmware, rpeak_ds2, wcam_beta
from sdk.compress.benchmark import run_benchmark


def main() -> None:
    rpeak_ds2.main([])
    wcam_beta.main([])
    run_benchmark()
    firmware.main([])


if __name__ == "__main__":
    main()
