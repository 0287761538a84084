"""`make bench`: every benchmark, results written under benchmarks/results/."""

from benchmarks import (af_robustness, af_rr_baseline, clinician, closed_form_head, compression, device_model,
                        device_path_cost, firmware, isometry, monitor_c_equality, onnx_portability, patient_adaptive, ppg_hr, rpeak_c_equality,
                        rpeak_ds2, stream, synthetic, teacher_selection, wcam_beta)


def main() -> None:
    rpeak_ds2.main([])
    rpeak_c_equality.main([])
    monitor_c_equality.main([])
    device_path_cost.main([])
    teacher_selection.main([])
    closed_form_head.main([])
    patient_adaptive.main([])
    af_rr_baseline.main([])
    af_robustness.main([])
    ppg_hr.main([])
    wcam_beta.main([])
    compression.main([])
    isometry.main([])
    device_model.main([])
    firmware.main([])
    onnx_portability.main([])
    stream.main([])
    clinician.main([])
    synthetic.main([])


if __name__ == "__main__":
    main()
