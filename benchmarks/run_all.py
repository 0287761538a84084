"""`make bench`: every benchmark, results written under benchmarks/results/."""

from benchmarks import firmware, rpeak_ds2, wcam_beta
from sdk.compress.benchmark import run_benchmark as compression_benchmark
from sdk.stream.benchmark import run_benchmark as stream_benchmark


def main() -> None:
    rpeak_ds2.main([])
    wcam_beta.main([])
    compression_benchmark()
    firmware.main([])
    stream_benchmark()


if __name__ == "__main__":
    main()
