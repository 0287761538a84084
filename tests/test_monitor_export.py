"""An export that ships the C device path (`heartsight export --sensor-fs`): its files, CMakeLists.txt and Zephyr
module, report.json; a CMake program built from it (strict flags) that feeds samples and counts beats as the host build
does; its prefixed copy linked next to a second prefixed beat model with its own device path; and
`heartsight verify-firmware DIR --monitor RECORD` against the Python Monitor.

The exports are the zoo's, copied and given their device path by firmware_export.monitor_tables.write_monitor (what
`heartsight export --sensor-fs` calls after exporting), so that no test exports a model again."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import DATA, needs_mitdb
from firmware_export.monitor_host import CMonitor, build_monitor_library, config_for
from firmware_export.monitor_tables import MONITOR_FILES, shipped_rates, write_monitor
from firmware_export.prefix import write_prefixed
from models.registry import ZOO_DIR
from sdk.data import synthetic
from sdk.errors import HeartSightError

STRICT = "-Wall -Wextra -Werror -pedantic"
needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed (apt-get install -y cmake)")


def exported(tmp_path_factory, name: str, rates: list[float]):
    """A copy of the zoo's int8 export of `name` with its device path for the rates."""
    out = tmp_path_factory.mktemp(name) / "int8"
    shutil.copytree(ZOO_DIR / name / "int8", out)
    write_monitor(out, rates)
    return out


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return exported(tmp_path_factory, "ecg_beat_wcam", [360.0])


@pytest.fixture(scope="module")
def signal(tmp_path_factory):
    """30 s of synthetic ECG at 360 Hz with V beats (alerts), as float32 samples in a file the programs read."""
    x = synthetic.synthetic_ecg(30, 360.0, heart_rate=75, ectopic={"V": 0.15}, seed=0).signal.astype(np.float32)
    path = tmp_path_factory.mktemp("signal") / "ecg.f32"
    x.tofile(path)
    return x, path


def program(prefixes: list[str]) -> str:
    """main.c: one device path per prefix, configured by its export's tables for 360 Hz, fed the file's samples in
    one-second chunks; prints each model's name, beats, classified beats, alerts and overflows."""
    parts = ['#include <stdio.h>\n']
    parts += [f'#include "{p}monitor.h"\n' for p in prefixes]
    parts += [f'#include "{"heartsight_" if p == "hs_" else p}model.h"\n' for p in prefixes]
    for p in prefixes:
        P = p.upper()
        parts.append(f"""
int {p}monitor_config_for(double fs, {p}monitor_config_t *config);  /* {p}monitor_tables.c */
static {p}monitor_t {p}state;
static {p}context_t {p}model_context;
static unsigned long {p}counts[3];
static void {p}on_event(const {p}monitor_event_t *event, void *user)
{{
    (void)user;
    if (event->kind == {P}MONITOR_EVENT_BEAT) {{
        {p}counts[0]++;
        if (event->beat.label != {P}MONITOR_UNCLASSIFIED) {p}counts[1]++;
    }} else if (event->kind == {P}MONITOR_EVENT_ALERT) {{
        {p}counts[2]++;
    }}
}}
""")
    parts.append("""
int main(int argc, char **argv)
{
    static float chunk[360];
    size_t n;
    FILE *file;
""")
    for p in prefixes:
        P = p.upper()
        parts.append(f"""    {{
        {p}monitor_config_t config;
        uint32_t overflows = 0;
        if (argc < 2 || (file = fopen(argv[1], "rb")) == NULL) return 2;
        if ({p}monitor_config_for(360.0, &config) != {P}MONITOR_OK) return 3;
        config.model_context = &{p}model_context;
        if ({p}monitor_init(&{p}state, &config) != {P}MONITOR_OK) return 4;
        while ((n = fread(chunk, sizeof(float), 360, file)) > 0) {{
            int status = {p}monitor_feed(&{p}state, chunk, (int)n, {p}on_event, NULL);
            if (status != {P}MONITOR_OK && status != {P}MONITOR_HELD) return 5;
        }}
        fclose(file);
        if ({p}monitor_finish(&{p}state, {p}on_event, NULL) != {P}MONITOR_OK) return 6;
        {p}monitor_overflows(&{p}state, &overflows);
        printf("%s beats %lu classified %lu alerts %lu overflows %lu\\n", {P}MODEL_NAME, {p}counts[0], {p}counts[1],
               {p}counts[2], (unsigned long)overflows);
    }}
""")
    parts.append("    return 0;\n}\n")
    return "".join(parts)


def build_app(tmp_path, libraries: dict, prefixes: list[str]):
    """A CMake app adding each export directory (target name: its library) and linking them; everything compiled
    with the strict flags. Returns the build directory."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.c").write_text(program(prefixes))
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C)\n"
        + "".join(f"add_subdirectory({directory} {target})\n" for target, directory in libraries.items())
        + f"add_executable(app main.c)\ntarget_link_libraries(app {' '.join(libraries)})\n")  # they bring libm
    build = tmp_path / "build"
    for command in (["cmake", "-S", str(app), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     f"-DCMAKE_C_FLAGS={STRICT}"], ["cmake", "--build", str(build)]):
        run = subprocess.run(command, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return build


def host_counts(export, x: np.ndarray) -> str:
    """The program's line for the host build of the same export (firmware_export.monitor_host)."""
    library = build_monitor_library(export, shipped_rates(export))
    monitor = CMonitor(library, 360.0, config=config_for(library, 360.0))
    events = [e for i in range(0, len(x), 360) for e in monitor.feed(x[i: i + 360])] + monitor.finish()
    beats = [e for kind, e in events if kind == "beat"]
    alerts = [e for kind, e in events if kind == "alert"]
    name = json.loads((export / "card.json").read_text())["name"]
    return (f"{name} beats {len(beats)} classified {sum(b['label'] is not None for b in beats)} alerts {len(alerts)} "
            f"overflows {monitor.overflows}")


# --- the export ------------------------------------------------------------------------------------------------------

def test_the_export_ships_the_device_path_and_lists_it(export):
    for name in MONITOR_FILES:
        assert (export / name).is_file(), name
    assert json.loads((export / "report.json").read_text())["monitor"] == {"sensor_fs": [360.0],
                                                                            "files": list(MONITOR_FILES)}
    sources = [name for name in MONITOR_FILES if name.endswith(".c")]
    lists = (export / "CMakeLists.txt").read_text()
    library = re.search(r"add_library\(heartsight_model STATIC ([^)]*)\)", lists).group(1).split()
    assert set(sources) < set(library) and "heartsight_model.c" in library
    zephyr = (export / "zephyr" / "CMakeLists.txt").read_text()
    zephyr = re.findall(r"\$\{CMAKE_CURRENT_LIST_DIR\}/\.\./(\S+?\.c)", zephyr)
    assert zephyr == library
    assert "HS_MONITOR_MAX_FS" in lists  # how to size the state
    assert "target_link_libraries(heartsight_model PUBLIC m)" in lists  # exp, fma, fmod
    assert shipped_rates(export) == [360.0]
    # the zoo's export, written without --sensor-fs, has none of it
    zoo = ZOO_DIR / "ecg_beat_wcam" / "int8"
    assert not (zoo / "hs_monitor.c").exists() and "hs_monitor" not in (zoo / "CMakeLists.txt").read_text()
    assert "monitor" not in json.loads((zoo / "report.json").read_text())


def test_only_beat_models_and_valid_rates(tmp_path):
    af = tmp_path / "af"
    shutil.copytree(ZOO_DIR / "ecg_af" / "int8", af, ignore=shutil.ignore_patterns("folds"))
    with pytest.raises(HeartSightError, match="ecg_af is a rhythm model: export it without --sensor-fs"):
        write_monitor(af, [360.0])
    assert not (af / "hs_monitor.c").exists()
    beat = tmp_path / "beat"
    shutil.copytree(ZOO_DIR / "ecg_beat_wcam" / "int8", beat)
    with pytest.raises(HeartSightError, match="80-500 Hz, not 1000 Hz"):
        write_monitor(beat, [360.0, 1000.0])
    assert not (beat / "hs_monitor.c").exists()  # nothing written


def test_an_edited_device_path_is_not_verified(export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    with open(copy / "hs_monitor_tables.c", "a") as tables:
        tables.write("/* edited */\n")
    with pytest.raises(HeartSightError, match="hs_monitor_tables.c is not what this HeartSight writes"):
        shipped_rates(copy)


@needs_cmake
def test_a_cmake_program_built_from_the_export_counts_the_host_builds_beats(export, signal, tmp_path):
    x, path = signal
    build = build_app(tmp_path, {"heartsight_model": export}, ["hs_"])
    out = subprocess.run([str(build / "app"), str(path)], capture_output=True, text=True, check=True).stdout
    expected = host_counts(export, x)
    assert out.splitlines() == [expected]
    beats, classified, alerts = (int(v) for v in re.findall(r"beats (\d+) classified (\d+) alerts (\d+)", out)[0])
    assert beats >= classified > 30 and alerts >= 1


@needs_cmake
def test_the_prefixed_copy_links_next_to_a_second_prefixed_beat_model(export, signal, tmp_path_factory, tmp_path):
    """beat_ (ecg_beat_wcam) and base_ (ecg_beat, its device path for 360 and 250 Hz), each with its own device path,
    in one program: every symbol of each library under its prefix, and beat_ counts what the export counts."""
    x, path = signal
    second = exported(tmp_path_factory, "ecg_beat", [360.0, 250.0])
    copies = {"beat_model": write_prefixed(export, "beat_", tmp_path / "beat_c"),
              "base_model": write_prefixed(second, "base_", tmp_path / "base_c")}
    for target, written in copies.items():
        prefix = target.replace("model", "")
        names = sorted(p.name for p in written)
        assert f"{prefix}monitor.c" in names and f"{prefix}monitor_tables.c" in names and f"{prefix}model.c" in names
        assert not any(re.search(r"\b(hs|HS)_\w", p.read_text()) for p in written)  # every name renamed
        lists = (written[0].parent / "CMakeLists.txt").read_text()
        assert f"{prefix}monitor_tables.c" in lists and f"{prefix.upper()}MONITOR_MAX_FS" in lists
        assert f"{prefix}monitor.c" in (written[0].parent / "zephyr" / "CMakeLists.txt").read_text()
    build = build_app(tmp_path, {target: written[0].parent for target, written in copies.items()},
                      ["beat_", "base_"])
    for target in copies:  # what each library defines is its own
        archive = next(build.rglob(f"lib{target}.a"))
        symbols = subprocess.run(["nm", "-g", "--defined-only", str(archive)], capture_output=True, text=True,
                                 check=True).stdout
        defined = [line.split()[-1] for line in symbols.splitlines() if len(line.split()) == 3]
        assert defined and all(s.startswith(target.replace("model", "")) for s in defined), defined
    lines = subprocess.run([str(build / "app"), str(path)], capture_output=True, text=True, check=True).stdout
    beat, base = lines.splitlines()
    assert beat == host_counts(export, x)
    assert base.startswith("ecg_beat beats ") and base.split()[2] == beat.split()[2]  # same R peaks, another model


# --- heartsight verify-firmware --monitor ---------------------------------------------------------------------------

@needs_mitdb
def test_verify_firmware_monitor_on_record_100(export, heartsight_main):
    run = heartsight_main("verify-firmware", export, "--monitor", "100", "--seconds", "20", "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    print(run.stdout)
    assert "mitdb/100: 20 s at 360 Hz in chunks of 360 samples" in run.stdout
    assert re.search(r"host: (\d+)/\1 beats equal \(C \1; R peak within 3 samples\), \1 labels equal, 0/0 alerts "
                     r"equal \(C 0\), 0 overflows: equal", run.stdout)
    run = heartsight_main("verify-firmware", export, "--monitor", "100", "--seconds", "20", "--data-dir", DATA,
                          "--json")
    result = json.loads(run.stdout)
    host = result["runs"]["host"]
    assert run.returncode == 0 and result["equal"] and result["sensor_fs"] == [360.0]
    assert host["beats"] == host["c_beats"] == host["beats_equal"] == host["labels_equal"] > 20
    assert host["alerts"] == host["alerts_equal"] == host["overflows"] == 0


def test_verify_firmware_monitor_on_a_file_with_alerts(export, signal, tmp_path, heartsight_main):
    x, _ = signal
    np.save(tmp_path / "ecg.npy", x)
    run = heartsight_main("verify-firmware", export, "--monitor", tmp_path / "ecg.npy", "--fs", "360", "--json")
    assert run.returncode == 0, run.stderr
    host = json.loads(run.stdout)["runs"]["host"]
    assert host["equal"] and host["alerts"] == host["alerts_equal"] >= 1


@pytest.mark.parametrize("args, message", [
    (["--monitor", "999"], "record mitdb/999 not found"),
    (["--monitor", "100", "--seconds", "0"], "--seconds must be a positive number"),
    (["--seconds", "20"], "--seconds and --fs go with --monitor RECORD"),
])
def test_verify_firmware_monitor_bad_input(export, heartsight_main, tmp_path, args, message):
    run = heartsight_main("verify-firmware", export, *args, "--data-dir", tmp_path)
    assert run.returncode == 2 and message in run.stderr and run.stdout == "", run


def test_verify_firmware_monitor_refuses_an_export_without_it_and_other_rates(export, signal, tmp_path,
                                                                              heartsight_main):
    run = heartsight_main("verify-firmware", ZOO_DIR / "ecg_beat_wcam" / "int8", "--monitor", "100")
    assert run.returncode == 2 and "has no C device path" in run.stderr and "--sensor-fs 360" in run.stderr
    np.save(tmp_path / "ecg.npy", signal[0][: 250 * 20])
    run = heartsight_main("verify-firmware", export, "--monitor", tmp_path / "ecg.npy", "--fs", "250")
    assert run.returncode == 2 and "has tables for 360 Hz only; export it with --sensor-fs 250" in run.stderr


@needs_mitdb
def test_verify_firmware_monitor_under_qemu(export, heartsight_main):
    from firmware_export.target import toolchain_missing

    if toolchain_missing():
        pytest.skip(toolchain_missing())
    run = heartsight_main("verify-firmware", export, "--monitor", "100", "--seconds", "20", "--data-dir", DATA,
                          "--qemu", "--json")
    assert run.returncode == 0, run.stderr
    runs = json.loads(run.stdout)["runs"]
    assert runs["qemu"]["equal"] and runs["qemu"]["beats"] == runs["qemu"]["c_beats"] > 20


# --- heartsight export --sensor-fs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--model", "ecg_af", "--sensor-fs", "360"], "ecg_af is a rhythm model: export it without --sensor-fs"),
    (["--model", "ecg_beat_wcam", "--sensor-fs", "360,abc"], "--sensor-fs takes sensor rates in Hz separated by"),
    (["--model", "ecg_beat_wcam", "--sensor-fs", "1000"], "80-500 Hz, not 1000 Hz"),
    (["--model", "ecg_beat_wcam", "--sensor-fs", "360,360"], "names 360 Hz twice"),
])
def test_export_sensor_fs_is_checked_before_exporting(heartsight_main, tmp_path, args, message):
    run = heartsight_main("export", *args, "--out", tmp_path / "out")
    assert run.returncode == 2 and message in run.stderr, run
    assert not (tmp_path / "out").exists()  # refused before the minutes of exporting
