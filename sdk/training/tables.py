"""Plain-text tables of evaluation results, in the layout of the EC57 reports clinicians know."""

from __future__ import annotations


def format_evaluation(result: dict) -> str:
    if result.get("protocol") == "patient-adaptive":
        return format_patient_adaptive(result)
    if "per_class" in result:
        return format_class_table(result)
    pooled = result["pooled"]
    lines = [f"{result['model']} ({result.get('backend', 'torch')})  {result['protocol']}"]
    if "mae_bpm" in pooled:
        lines.append(f"{'held out':<24}{'MAE bpm':>9}{'RMSE bpm':>10}{'windows':>9}")
        rows = [(",".join(f["held_out"]), f) for f in result["folds"]] + [("pooled", pooled)]
        lines += [f"{name:<24}{r['mae_bpm']:>9.2f}{r['rmse_bpm']:>10.2f}{r['n']:>9}" for name, r in rows]
    else:
        lines.append(f"{'held out':<32}{'AF Se':>7}{'AF +P':>7}{'AF F1':>7}{'AF n':>7}{'acc':>7}")
        rows = [(",".join(f["held_out"]), f) for f in result["folds"]] + [("pooled", pooled)]
        lines += [f"{name:<32}{r['se']:>7.3f}{r['ppv']:>7.3f}{r['f1']:>7.3f}{r['n']:>7}{r['accuracy']:>7.3f}"
                  for name, r in rows]
    return "\n".join(lines)


def format_class_table(result: dict) -> str:
    lines = [f"{result['model']} ({result.get('backend', 'torch')}) on {result['split']}: {result['n']} beats, "
             f"accuracy {result['accuracy']:.4f}",
             f"{'class':<6}{'Se':>8}{'+P':>8}{'F1':>8}{'n':>8}"]
    for name, r in result["per_class"].items():
        lines.append(f"{name:<6}{r['se']:>8.4f}{r['ppv']:>8.4f}{r['f1']:>8.4f}{r['n']:>8}")
    for key in (k for k in result if k.startswith("S_without_")):
        r = result[key]
        lines.append(f"{'S':<6}{r['se']:>8.4f}{r['ppv']:>8.4f}{r['f1']:>8.4f}{r['n']:>8}  without record {key.rsplit('_', 1)[1]}")
    return "\n".join(lines)


def format_patient_adaptive(result: dict) -> str:
    classes = list(result["per_class"])
    explanation = result["explanation"]
    lines = [f"{result['model']} ({result['backend']}) patient-adaptive: head refitted per record on its first "
             f"{result['labelled_s']:g} s of labels, scored on the rest ({result['n']} beats)",
             f"{'record':<8}" + "".join(f"{c + ' Se':>8}{c + ' +P':>8}{c + ' n':>7}" for c in classes)]
    rows = [*result["per_record"].items(), ("pooled", result["per_class"])]
    for name, r in rows:
        lines.append(f"{name:<8}" + "".join(f"{r[c]['se']:>8.3f}{r[c]['ppv']:>8.3f}{r[c]['n']:>7}" for c in classes))
    lines.append(f"explanation: CAM cosine to the float model under the same head {explanation['cosine_to_float_mean']} "
                 f"(5th percentile {explanation['cosine_to_float_p05']}, {explanation['beats_compared']} beats; both "
                 f"traces empty on {explanation['both_traces_empty']:.1%}), same class on "
                 f"{explanation['class_agreement_with_float']:.1%} of beats")
    return "\n".join(lines)
