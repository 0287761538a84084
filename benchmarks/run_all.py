"""`make bench`: every benchmark, results written under benchmarks/results/."""

from benchmarks import rpeak_ds2


def main() -> None:
    rpeak_ds2.main([])


if __name__ == "__main__":
    main()
