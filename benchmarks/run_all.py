"""`make bench`: every benchmark, results written under benchmarks/results/."""

from benchmarks import compression, device_model, firmware, isometry, onnx_portability, rpeak_ds2, stream, wcam_beta


def main() -> None:
    rpeak_ds2.main([])
    wcam_beta.main([])
    compression.main([])
    isometry.main([])
    device_model.main([])
    firmware.main([])
    onnx_portability.main([])
    stream.main([])


if __name__ == "__main__":
    main()
