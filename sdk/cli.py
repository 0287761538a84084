"""The `heartsight` command line. User errors print one line and exit 2; nothing prints a traceback."""

from __future__ import annotations

import argparse
import getpass
import json
import signal
import sys
import threading
from pathlib import Path

from sdk.errors import HeartSightError


def _terminate(signum, frame) -> None:
    """SIGTERM (systemd, docker, kill) stops a command as Ctrl-C does, outboxes stay; a listener ends normally."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args) or 0
    except HeartSightError as exc:
        print(f"heartsight: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("heartsight: interrupted", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage errors take the form of every other error: one line saying what is wrong, and where the options are."""

    def error(self, message: str):
        self.exit(2, f"heartsight: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="heartsight", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="manage the public databases")
    data_commands = data.add_subparsers(required=True, metavar="ACTION")
    fetch = data_commands.add_parser("fetch", help="download a database from PhysioNet")
    fetch.add_argument("database", choices=["mitdb", "wrist", "svdb"])
    _data_dir_option(fetch)
    fetch.set_defaults(run=_fetch)

    train = commands.add_parser("train", help="train a zoo model (writes models/zoo/NAME)")
    train.add_argument("name", help="ecg_beat, ecg_af or ppg_hr")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    train.add_argument("--out", help="write here instead of the zoo")
    train.add_argument("--training-set", default="DS1", choices=["DS1", "DS1+SVDB"],
                       help="beat models: DS1 (the literature's protocol) or DS1 plus the svdb patients")
    _data_dir_option(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="score a trained model by its protocol")
    evaluate.add_argument("--model", required=True, help="zoo name, model directory or exported int8 directory")
    evaluate.add_argument("--split", help="MIT-BIH split for beat models (default DS2)")
    evaluate.add_argument("--protocol", choices=("inter-patient", "patient-adaptive"), default="inter-patient",
                          help="beat models: patient-adaptive refits the head per DS2 record on its first 5 minutes "
                               "of reference labels (AAMI EC57) and scores the rest (default inter-patient)")
    _backend_option(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _data_dir_option(evaluate)
    evaluate.set_defaults(run=_evaluate)

    compress = commands.add_parser("compress", help="compress a beat model, plain or with WCAM")
    compress.add_argument("--model", default="ecg_beat", help="zoo name or model directory (the teacher)")
    compress.add_argument("--method", required=True,
                          help="structured, unstructured, distill, qat, unify, mpd or kernel-codebook")
    compress.add_argument("--ratio", type=float, default=0.5,
                          help="share of channels removed (structured, distill, and before qat, unify, mpd and "
                               "kernel-codebook, which accept 0) or of weights zeroed (unstructured); default 0.5")
    compress.add_argument("--wcam", type=float, default=0.0, metavar="BETA",
                          help="weight of the WCAM attribution-matching loss (0 = plain; see benchmarks/results)")
    compress.add_argument("--schedule", default="one-shot", help="structured pruning: one-shot or iterative")
    compress.add_argument("--stochastic", action="store_true", help="stochastic WCAM: drop 30%% of teacher channels")
    compress.add_argument("--exact", action="store_true", help="WCAM through double backward instead of the closed form")
    compress.add_argument("--epochs", type=int, help="override the method's epoch count")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--repair", default="none",
                          help="dynamical-isometry repair of filter pruning: none, growing-l2 or qr-orthogonal")
    compress.add_argument("--lr", type=float, help="fine-tuning peak learning rate (default: the method's)")
    compress.add_argument("--fold-bn", action="store_true",
                          help="structured: fold batch norm into the convolutions after removal (needed by qr-orthogonal)")
    compress.add_argument("--kd", action="store_true", help="add class-balanced distillation from the teacher")
    compress.add_argument("--block", default="channels:4",
                          help="unify: weights sharing one magnitude, channels:N (N input channels at one tap) or "
                               "taps:N (N taps of one kernel); default channels:4")
    compress.add_argument("--block-ratio", type=float, default=0.5,
                          help="unify: share of each layer's blocks pruned (default 0.5)")
    compress.add_argument("--groups", type=int, default=4,
                          help="mpd: block-diagonal groups per convolution after the first (default 4)")
    compress.add_argument("--bits", type=int, default=4,
                          help="kernel-codebook: index bits per kernel, 2**bits codewords per layer (default 4)")
    compress.add_argument("--out", required=True, help="directory for model.pt and card.json")
    _data_dir_option(compress)
    compress.set_defaults(run=_compress)

    export = commands.add_parser("export", help="quantize a model once: int8 C library and ONNX, with its flash/RAM report")
    export.add_argument("--model", required=True, help="zoo name or model directory")
    export.add_argument("--out", required=True, help="directory to write (then pass it as --model to run it)")
    export.add_argument("--calibration", default="minmax", help="minmax or percentile (training windows)")
    export.add_argument("--max-flash", type=int, metavar="BYTES", help="refuse an export needing more flash")
    export.add_argument("--max-ram", type=int, metavar="BYTES", help="refuse an export needing more RAM")
    export.add_argument("--kernels", default="portable", choices=["portable", "cmsis-nn"],
                        help="cmsis-nn: also write OUT/cmsis_nn, the C library with its layers on Arm's CMSIS-NN "
                             "(build it with CMSIS_NN_DIR and CMSIS_CORE_DIR)")
    export.add_argument("--head-updates", action=argparse.BooleanOptionalAction, default=True,
                        help="beat and rhythm models: the head can be replaced at run time by a signed update "
                             "(hs_set_head; ~2.2 KB of code, the head in RAM). Default on")
    export.add_argument("--prefix", metavar="NAME_", help="also write the C library with every symbol, macro and file "
                                                          "under this prefix (hs_infer -> NAME_infer) into "
                                                          "OUT/NAME_c/, so several models link into one image")
    export.add_argument("--sensor-fs", metavar="HZ[,HZ...]",
                        help="beat models: also ship the C device path (hs_monitor: raw sensor samples to beats and "
                             "alerts) with its tables for these sensor rates, e.g. 360 or 360,250")
    _data_dir_option(export)
    export.set_defaults(run=_export)

    verify = commands.add_parser("verify-firmware", help="check an exported C library against the integer reference")
    verify.add_argument("directory", help="the directory `heartsight export` wrote")
    verify.add_argument("--qemu", action="store_true", help="also build for Cortex-M4 and run under QEMU")
    verify.add_argument("--n", type=int, default=32, help="held-out windows to compare (default 32)")
    verify.add_argument("--monitor", metavar="RECORD",
                        help="instead, stream a recording (an MIT-BIH name like 100, or a WFDB/.npy/.csv path) through "
                             "the export's C device path (--sensor-fs) and the Python Monitor, and compare them")
    verify.add_argument("--seconds", type=float, help="--monitor: only the recording's first seconds")
    verify.add_argument("--fs", type=float, help="--monitor: sampling rate in Hz (required for .npy and .csv)")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    _data_dir_option(verify)
    verify.set_defaults(run=_verify)

    analyze = commands.add_parser("analyze", help="run the device path over recordings")
    analyze.add_argument("inputs", nargs="+", metavar="INPUT", help="WFDB record path, .npy or .csv")
    analyze.add_argument("--fs", type=float, help="sampling rate in Hz (required for .npy and .csv)")
    analyze.add_argument("--model", default="ecg_beat",
                         help="zoo name (ecg_beat, ecg_beat_wcam, ecg_af, ppg_hr), model or exported directory")
    _backend_option(analyze)
    analyze.add_argument("--channel", type=int, help="channel index (default: MLII if named, else 0)")
    analyze.add_argument("--json", action="store_true", help="one JSON object per input per line")
    analyze.add_argument("--explain", action="store_true",
                         help="add window_start and the saliency trace of the predicted class to every beat/window")
    analyze.set_defaults(run=_analyze)

    stream = commands.add_parser("stream", help="replay a recording through the device runtime and publish alerts")
    stream.add_argument("input", metavar="INPUT", help="WFDB record path, .npy or .csv")
    _broker_options(stream)
    stream.add_argument("--device", required=True, help="this device's id (its topic and its broker user)")
    stream.add_argument("--site", default="default")
    stream.add_argument("--model", default="ecg_beat", help="zoo name, model or exported directory (default ecg_beat)")
    _backend_option(stream)
    stream.add_argument("--speed", default="max", help="times real time, or max (default)")
    stream.add_argument("--fs", type=float, help="sampling rate in Hz (required for .npy and .csv)")
    stream.add_argument("--channel", type=int, help="channel index (default: MLII if named, else 0)")
    stream.add_argument("--outbox", help="the store-and-forward file (default ~/.heartsight/outbox-SITE-DEVICE.sqlite)")
    stream.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait at the end for the clinic to acknowledge queued alerts (default 30)")
    stream.add_argument("--head-key", help="file with this device's head-signing key (hex): apply the head updates "
                                           "the clinic sends it (int8 backends)")
    stream.add_argument("--json", action="store_true", help="print one JSON object")
    _data_dir_option(stream)
    stream.set_defaults(run=_stream)

    clinician = commands.add_parser("clinician", help="receive, store and review explained alerts")
    clinician_commands = clinician.add_subparsers(required=True, metavar="ACTION")
    listen = clinician_commands.add_parser("listen", help="subscribe and store alerts (SQLite file or PostgreSQL URL)")
    _broker_options(listen)
    listen.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    listen.add_argument("--shared", metavar="GROUP", help="join a shared subscription so listeners split the load")
    listen.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    listen.add_argument("--client-id", help="the broker keeps this id's session (and the alerts queued for it) across "
                                            "restarts; default heartsight-listener[-USER][-GROUP]: give each listener "
                                            "of one account in one shared group its own")
    listen.add_argument("--processes", type=int, default=1, metavar="N",
                        help="run N listeners in the --shared group, one process each (client ids ID-0 .. ID-N-1), "
                             "so storing uses N cores; give them a PostgreSQL --db (default 1)")
    listen.set_defaults(run=_listen)
    review = clinician_commands.add_parser("review", help="write the HTML review pages")
    review.add_argument("--db", required=True)
    review.add_argument("--out", required=True)
    review.set_defaults(run=_review)
    export_alerts = clinician_commands.add_parser("export", help="print stored alerts as JSON lines")
    export_alerts.add_argument("--db", required=True)
    export_alerts.set_defaults(run=_export_alerts)
    adjudicate = clinician_commands.add_parser("adjudicate", help="confirm, reject or relabel a stored alert (audited)")
    adjudicate.add_argument("alert_id", metavar="ALERT_ID")
    adjudicate.add_argument("--db", required=True)
    adjudicate.add_argument("--reviewer", required=True, help="who judges (kept in the audit log)")
    verdict = adjudicate.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--confirm", dest="action", action="store_const", const="confirm")
    verdict.add_argument("--reject", dest="action", action="store_const", const="reject",
                         help="the alert is wrong (a beat alert's beat counts as N)")
    verdict.add_argument("--relabel", metavar="LABEL", help="the right label: N, S, V or F (beats), AF or non-AF")
    adjudicate.add_argument("--note", default="")
    adjudicate.set_defaults(run=_adjudicate)
    key = clinician_commands.add_parser("key", help="make a device's head-signing key: kept in the store, written to "
                                                    "--out for provisioning the device")
    key.add_argument("--db", required=True)
    key.add_argument("--device", required=True)
    key.add_argument("--site", default="default")
    key.add_argument("--out", required=True, help="file to write the key to (hex, mode 0600); the device reads it")
    key.set_defaults(run=_device_key)
    recalibrate = clinician_commands.add_parser(
        "recalibrate", help="refit a device's head from the judged alerts and send it to the device")
    recalibrate.add_argument("--db", required=True)
    recalibrate.add_argument("--device", required=True)
    recalibrate.add_argument("--site", default="default")
    recalibrate.add_argument("--model", default="ecg_beat_wcam", help="the int8 export the device runs: zoo name or "
                                                                       "exported directory (default ecg_beat_wcam)")
    _broker_options(recalibrate, required=False, help="publish the update (mqtt://host:port or mqtts://); without "
                                                       "it, only fit and record it")
    _data_dir_option(recalibrate)
    recalibrate.set_defaults(run=_recalibrate)
    serve = clinician_commands.add_parser("serve", help="the clinicians' web app: live inbox, explained alerts, "
                                                        "verdicts, device timelines, FHIR export")
    serve.add_argument("--db", required=True, help="SQLite file or postgresql:// URL (the store listeners fill)")
    _broker_options(serve, required=False, help="also listen here (mqtt://host:port or mqtts://) and store into --db, "
                                                "in this process")
    serve.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--secure-cookies", action="store_true",
                       help="mark session cookies Secure: use when the app is reached over HTTPS (a TLS proxy)")
    serve.set_defaults(run=_serve)
    user = clinician_commands.add_parser("user", help="manage the web app's accounts")
    user_commands = user.add_subparsers(required=True, metavar="ACTION")
    user_add = user_commands.add_parser("add", help="add an account; the password is read from stdin")
    user_add.add_argument("name", metavar="NAME")
    user_add.add_argument("--db", required=True, help="SQLite file or postgresql:// URL")
    user_add.add_argument("--role", choices=["clinician", "admin"], default="clinician",
                          help="admin also reads the whole audit log (default clinician)")
    user_add.set_defaults(run=_user_add)

    broker_parser = commands.add_parser("broker", help="set up a Mosquitto broker that enforces each account's identity")
    broker_commands = broker_parser.add_subparsers(required=True, metavar="ACTION")
    broker_config = broker_commands.add_parser(
        "config", help="write mosquitto.conf, accounts with generated passwords and TLS certificates into a directory")
    broker_config.add_argument("--out", required=True, help="directory to write (re-running keeps its passwords and CA)")
    broker_config.add_argument("--port", type=int, help="listener port on 127.0.0.1 (default 8883 with TLS, else 1883)")
    broker_config.add_argument("--device", action="append", default=[], metavar="SITE/ID",
                               help="a device account (user SITE/ID), bound to its own topics; repeat for each")
    broker_config.add_argument("--clinician", action="append", default=[], metavar="NAME",
                               help="a clinician account: reads every alert and status, writes acks; one per listener")
    broker_config.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                               help="TLS with a CA made here (default); --no-tls for plain MQTT")
    broker_config.add_argument("--autosave-changes", type=int, default=1, metavar="N",
                               help="save the broker's state after every N changes (default 1: every change)")
    broker_config.add_argument("--dynsec-plugin", metavar="PATH", help="mosquitto_dynamic_security.so (default: found)")
    broker_config.set_defaults(run=_broker_config)

    bench = commands.add_parser("bench", help="run a benchmark of the source checkout (benchmarks/), writing "
                                              "benchmarks/results/")
    bench_commands = bench.add_subparsers(required=True, metavar="NAME")
    bench_stream = bench_commands.add_parser(
        "stream", help="fleet delivery: simulated devices publish alerts to a Mosquitto of its own, listener processes "
                       "store them; against Mosquitto's own ceiling measured in the same run")
    bench_stream.add_argument("--devices", metavar="N[,N...]", help="fleet sizes (default 1000,5000,10000)")
    bench_stream.add_argument("--seconds", type=int, help="how long each fleet publishes, one alert per device per "
                                                          "second (default 10)")
    bench_stream.add_argument("--listeners", type=int, help="listener processes in one shared subscription "
                                                            "(default 2)")
    bench_stream.set_defaults(run=_bench_stream)

    demo = commands.add_parser("demo", help="the main job on embedded defaults")
    _data_dir_option(demo)
    demo.add_argument("--out", default="out/demo", help="where to write the results (default out/demo)")
    demo.add_argument("--broker", help="publish to this broker (mqtt://host:port) instead of an embedded one")
    demo.add_argument("--embedded-broker", choices=["auto", "mosquitto", "python"], default="auto",
                      help="auto (default): Mosquitto on a free port when installed, else the in-process Python broker")
    demo.add_argument("--serve", action="store_true", help="then serve the clinician app on the demo's alerts, with "
                                                          "a one-time login, until Ctrl-C")
    demo.add_argument("--port", type=int, default=8080, help="port for --serve (default 8080)")
    demo.set_defaults(run=_demo)
    return parser


def _backend_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", help="torch (the float model), or the int8 export on c or onnxruntime "
                                          "(default: c for an exported directory, torch otherwise)")


def _broker_options(parser: argparse.ArgumentParser, required: bool = True,
                    help: str = "mqtt://host:port or mqtts://host:port") -> None:
    parser.add_argument("--broker", required=required, help=help)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls-ca", help="CA certificate that signed the broker's")


def _broker(args):
    """The broker options as one BrokerConfig, checked before anything else is read."""
    from sdk.stream.mqtt import BrokerConfig

    return BrokerConfig(args.broker, args.username, args.password, args.tls_ca)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding mitdb/, svdb/ and wrist_ppg_exercise/ (default $HEARTSIGHT_DATA)")


def _fetch(args) -> int:
    from sdk.data.records import fetch

    print(f"downloaded into {fetch(args.database, args.data_dir)}")
    return 0


def _train(args) -> int:
    from sdk.training.recipes import train_model

    card = train_model(args.name, args.data_dir, args.out, seed=args.seed, epochs=args.epochs,
                       training_set=args.training_set)
    print(json.dumps(card["metrics"], indent=2))
    return 0


def _evaluate(args) -> int:
    from sdk.device.backends import evaluate
    from sdk.training.tables import format_evaluation

    if args.protocol == "patient-adaptive":
        from sdk.device.recalibration import patient_adaptive

        if args.split not in (None, "DS2"):
            raise HeartSightError("the patient-adaptive protocol is defined on DS2 (the population is DS1); drop --split")
        result = patient_adaptive(args.model, args.backend, args.data_dir)
    else:
        result = evaluate(args.model, args.backend, args.split, args.data_dir)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"}))
    else:
        print(format_evaluation(result))
    return 0


def _compress(args) -> int:
    from sdk.compress import Plan, compress

    plan = Plan(args.method, args.ratio, args.wcam, args.schedule, args.stochastic, args.exact, args.epochs, args.seed,
                args.repair, args.lr, args.fold_bn, args.kd, args.block, args.block_ratio, args.groups, args.bits)
    plan.check()  # before any data is read
    card = compress(args.model, plan, args.out, args.data_dir)
    print(json.dumps({"out": args.out, "size": card["size"], "DS2_accuracy": card["metrics"]["DS2"]["accuracy"],
                      "explanation": card["metrics"]["explanation"]}, indent=2))
    return 0


def _export(args) -> int:
    from firmware_export import export
    from firmware_export.artifact import record_scores
    from firmware_export.codegen import format_report
    from sdk.device.backends import evaluate
    from sdk.training.tables import format_evaluation

    from firmware_export.monitor_tables import check_monitor_task, parse_rates, write_monitor
    from firmware_export.prefix import check_prefix, write_prefixed
    from models.registry import load_model

    if args.prefix is not None:
        check_prefix(args.prefix)  # before the minutes of exporting
    rates = None if args.sensor_fs is None else parse_rates(args.sensor_fs)
    if rates is not None:
        model = load_model(args.model)
        check_monitor_task(model.card.get("name", model.spec.name), model.spec.task)
    report = export(args.model, args.out, args.data_dir, args.calibration, args.max_flash, args.max_ram,
                    args.head_updates, args.kernels)
    print(format_report(report))
    scores = evaluate(args.out, "c", data_root=args.data_dir)  # the export's own scores, by the model's protocol
    record_scores(args.out, scores)
    print(format_evaluation(scores))
    onnx = report["onnx"]["int8"]
    print(f"int8 ONNX graph: {onnx['logits_identical_to_reference']}/{onnx['n']} held-out windows bit-exact with the C library's arithmetic")
    print(f"wrote {args.out} (quantized_model.json, heartsight_model.h/.c, the runtime hs_*.h/.c, model_int8.onnx, "
          f"model_float.onnx, card.json, report.json); int8 sha256 {report['int8_sha256']}")
    if rates is not None:
        written = write_monitor(args.out, rates)
        print(f"wrote the C device path for sensors at {', '.join(f'{fs:g}' for fs in rates)} Hz into {args.out} "
              f"({', '.join(p.name for p in written)}; listed in CMakeLists.txt, zephyr/ and report.json)")
    if args.prefix is not None:
        written = write_prefixed(args.out, args.prefix, Path(args.out) / f"{args.prefix}c")
        print(f"wrote {written[0].parent}: the C library under the prefix {args.prefix} ({', '.join(p.name for p in written)})")
    return 0


def _verify(args) -> int:
    from firmware_export import verify

    if args.monitor is not None:
        return _verify_monitor(args)
    if args.seconds is not None or args.fs is not None:
        raise HeartSightError("--seconds and --fs go with --monitor RECORD")
    result = verify(args.directory, args.n, args.qemu, args.data_dir)
    if args.json:
        print(json.dumps(result))
    else:
        for where in ("host", "qemu"):
            if where in result:
                print(f"{where}: {result[where]['exact']}/{result[where]['n']} windows bit-exact")
                if "head" in result[where]:
                    head = result[where]["head"]
                    refused = "; a tampered copy refused" if head.get("refused_tampered") else ""
                    print(f"{where}: head update applied (status {head['status']}{refused}), {head['exact']}/"
                          f"{head['n']} windows bit-exact with the new head")
        print(f"flash {result['flash_bytes']:,} bytes, RAM {result['ram_bytes']:,} bytes, {result['macs']:,} MACs")
        if "qemu_cmsis_nn" in result:
            q = result["qemu_cmsis_nn"]
            print(f"qemu, CMSIS-NN kernels: {q['exact']}/{q['n']} windows bit-exact; hs_infer "
                  f"{q['instructions_infer']:,} instructions ({q['instructions_per_mac']:g} per MAC)")
        if "qemu" in result:
            q = result["qemu"]
            print(f"Cortex-M4 (QEMU -icount): hs_infer {q['instructions_infer']:,} instructions "
                  f"({q['instructions_per_mac']:g} per MAC), hs_explain {q['instructions_explain']:,} "
                  f"({100 * q['explain_share']:.2f}% of an inference); at least {q['latency_ms_at_64mhz']:g} ms a "
                  "window at 64 MHz (instructions taken as cycles)")
    checks = [result[w] for w in ("host", "qemu", "qemu_cmsis_nn") if w in result]
    heads = [c["head"] for c in checks if "head" in c]
    exact = all(c["exact"] == c["n"] for c in checks + heads)
    return 0 if exact and all(h["status"] == 0 and h.get("refused_tampered", True) for h in heads) else 1


def _verify_monitor(args) -> int:
    from sdk.device.firmware_check import check_monitor

    result = check_monitor(args.directory, args.monitor, args.seconds, args.fs, args.data_dir, args.qemu)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['record']}: {result['seconds']:g} s at {result['fs']:g} Hz in chunks of {result['chunk']} "
              f"samples, through the C device path and the Python Monitor")
        for where, run in result["runs"].items():
            print(f"{where}: {run['beats_equal']}/{run['beats']} beats equal (C {run['c_beats']}; R peak within "
                  f"{run['sample_tolerance']} samples), {run['labels_equal']} labels equal, {run['alerts_equal']}/"
                  f"{run['alerts']} alerts equal (C {run['c_alerts']}), {run['overflows']} overflows: "
                  + ("equal" if run["equal"] else "DIFFERENT"))
    return 0 if result["equal"] else 1


def _stream(args) -> int:
    from firmware_export.head_update import read_key
    from sdk.data.records import check_fs, read_input
    from sdk.device.backends import make_runner
    from sdk.stream.publisher import Publisher
    from sdk.stream.replay import parse_speed, stream_recording

    broker = _broker(args)
    speed = parse_speed(args.speed)
    if args.fs is not None:
        check_fs(args.fs)
    recording = read_input(args.input, args.fs)
    head_key = None if args.head_key is None else read_key(args.head_key)
    runner = make_runner(args.model, args.backend)
    with Publisher(broker, args.device, args.site, args.outbox) as publisher:
        summary = stream_recording(recording, publisher, runner, speed, args.channel, flush_timeout_s=args.wait,
                                   head_key=head_key)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['samples']} samples, {summary['beats']} beats, {summary['alerts']} alerts; in the outbox, "
              f"{summary['awaiting_clinic']} await the clinic's acknowledgement and {summary['awaiting_broker']} "
              "the broker's")
    if summary["awaiting_clinic"] or summary["awaiting_broker"]:
        print(f"heartsight stream: {summary['status']}", file=sys.stderr)
    return 0


def _listen(args) -> int:
    # SIGTERM is how systemd and docker stop a service: a normal end that prints the counts and exits 0.
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    broker = _broker(args)
    if args.processes < 1:
        raise HeartSightError(f"--processes must be at least 1, got {args.processes}")
    if args.processes == 1:
        counts = _listen_one(broker, args.db, args.shared, args.client_id, args.duration, stopping.is_set)
    else:
        counts = _listen_processes(args, broker, stopping)
    print(json.dumps(counts))
    return 0


def _listen_one(broker, db: str, shared: str | None, client_id: str | None, duration: float | None,
                stop_when) -> dict:
    from sdk.clinician.listener import Listener
    from sdk.clinician.store import Store

    with Store(db) as store:
        return Listener(broker, store, shared, client_id=client_id).run(duration_s=duration, stop_when=stop_when)


def _listen_processes(args, broker, stopping: threading.Event) -> dict:
    """N listener processes in one shared group, each with a client id (a session at the broker) of its own: one
    Python process checks and stores about 4,000 alerts/s, so more alerts need more cores. Stopped together; counts
    summed."""
    import multiprocessing

    from sdk.clinician.listener import default_client_id

    if not args.shared:
        raise HeartSightError("--processes N splits the alerts between N listeners of a shared subscription: name "
                              "its group with --shared GROUP")
    base = args.client_id or default_client_id(broker, args.shared)
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    workers = [context.Process(target=_listener_process, args=(broker, args.db, args.shared, f"{base}-{i}",
                                                                args.duration, stop, results))
               for i in range(args.processes)]
    for worker in workers:
        worker.start()
    try:
        while not stopping.wait(0.2) and all(worker.exitcode is None for worker in workers):
            pass  # until SIGTERM, --duration or a listener's failure
    finally:  # Ctrl-C too: the listeners ignore SIGINT and stop when told, after acknowledging what they stored
        stop.set()
        for worker in workers:
            worker.join()
    outcomes = [results.get() for _ in range(results.qsize())]
    failed = [outcome for outcome in outcomes if isinstance(outcome, str)]
    if failed or len(outcomes) < len(workers):
        raise HeartSightError(failed[0] if failed else "a listener process died; its error is above")
    return {key: sum(counts[key] for counts in outcomes) for key in outcomes[0]}


def _listener_process(broker, db: str, shared: str, client_id: str, duration: float | None, stop, results) -> None:
    """One of _listen_processes' listeners: its counts, or its error as text, go to results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())  # a service manager stops the whole group
    try:
        results.put(_listen_one(broker, db, shared, client_id, duration, stop.is_set))
    except HeartSightError as exc:
        results.put(f"listener {client_id}: {exc}")


def _bench_stream(args) -> int:
    """The benchmarks come with the source checkout, not the installed package, and run in a process of their own
    (they use the SDK; the SDK never imports them)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "stream.py").exists():
        raise HeartSightError(f"no benchmarks/stream.py in {root}: the benchmarks come with the source checkout "
                              "(git clone), not the installed package")
    options = [(f"--{name}", value) for name in ("devices", "seconds", "listeners")
               if (value := getattr(args, name)) is not None]
    command = [sys.executable, "-m", "benchmarks.stream", "--fleet-only", *[str(x) for pair in options for x in pair]]
    return subprocess.run(command, cwd=root).returncode


def _review(args) -> int:
    from sdk.clinician.review import write_review
    from sdk.clinician.store import Store

    store = Store(args.db)
    pages = write_review(store, args.out)
    store.close()
    print(f"wrote {pages[0]} ({len(pages) - 1} device page(s))")
    return 0


def _export_alerts(args) -> int:
    from sdk.clinician.review import export_jsonl
    from sdk.clinician.store import Store

    store = Store(args.db)
    for line in export_jsonl(store):
        print(line)
    store.close()
    return 0


def _adjudicate(args) -> int:
    from sdk.clinician.store import Store

    with Store(args.db) as store:
        entry = store.adjudicate(args.alert_id, args.reviewer, "relabel" if args.relabel else args.action,
                                 args.relabel, args.note)
    print(json.dumps(entry))
    return 0


def _device_key(args) -> int:
    from firmware_export.head_update import write_key
    from sdk.clinician.store import Store
    from sdk.device.names import check_name

    check_name("device", args.device)
    check_name("site", args.site)
    with Store(args.db) as store:
        if store.device_key(args.site, args.device, required=False) is not None:
            raise HeartSightError(f"device {args.site}/{args.device} already has a head-signing key in {args.db}; a "
                                  "device keeps its key")
        store.set_device_key(args.site, args.device, write_key(args.out))
    print(f"wrote {args.out}: provision it with device {args.site}/{args.device} "
          f"(heartsight stream --head-key {args.out}); the store keeps its copy")
    return 0


def _recalibrate(args) -> int:
    from sdk.clinician.recalibrate import recalibrate
    from sdk.clinician.store import Store

    broker = _broker(args) if args.broker else None
    with Store(args.db) as store:
        summary = recalibrate(store, args.site, args.device, args.model, broker, args.data_dir)
    print(json.dumps(summary))
    return 0


def _serve(args) -> int:
    from sdk.clinician.web.server import serve

    broker = _broker(args) if args.broker else None
    serve(args.db, args.host, args.port, broker, https_only=args.secure_cookies)
    return 0


def _user_add(args) -> int:
    from sdk.clinician.accounts import add_user
    from sdk.clinician.store import Store

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise HeartSightError("the two passwords differ; nothing was changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    with Store(args.db) as store:
        add_user(store, args.name, password, args.role)
    print(f"added {args.role} {args.name} to {args.db}")
    return 0


def _broker_config(args) -> int:
    from sdk.stream.broker_setup import write_broker_config

    setup = write_broker_config(args.out, args.device, args.clinician, args.port, args.tls, args.autosave_changes,
                                args.dynsec_plugin)
    kept = f"; kept the passwords of {len(setup.kept_passwords)} existing account(s)" if setup.kept_passwords else ""
    tls = (f"; TLS with {'the existing' if setup.kept_tls else 'a new'} CA: clients pass --tls-ca {setup.ca}"
           if setup.tls else "; no TLS (passwords travel in clear text: keep it on this machine)")
    print(f"wrote {setup.conf}, {setup.dynsec.name} and {setup.credentials.name} (mode 0600: account -> password) "
          f"for {len(setup.accounts)} account(s) in {setup.directory}{kept}{tls}")
    print(f"start it with: mosquitto -c {setup.conf}   (clients connect to {setup.url})")
    return 0


def _analyze(args) -> int:
    from sdk.data.records import check_fs, read_input
    from sdk.device.analyze import analyze
    from sdk.device.backends import make_runner

    if args.fs is not None:
        check_fs(args.fs)
    runner = make_runner(args.model, args.backend)  # an unknown model fails once, before any input is read
    failures = 0
    for path in args.inputs:
        try:
            result = {"input": path, **analyze(read_input(path, args.fs), runner, args.channel, args.explain)}
        except HeartSightError as exc:
            failures += 1
            result = {"input": path, "error": str(exc)}
            print(f"heartsight: error: {exc}", file=sys.stderr)
        print(json.dumps(result) if args.json else _summary(result))
    return 1 if failures else 0


def _summary(result: dict) -> str:
    if "error" in result:
        return f"{result['input']}: error"
    from collections import Counter

    items = result["beats"] or result["windows"]
    unreadable = Counter(item["quality"] for item in items if item.get("quality"))
    note = f"; {sum(unreadable.values())} unreadable (" + ", ".join(f"{k} {v}" for k, v in sorted(unreadable.items())) \
        + ")" if unreadable else ""
    if result["beats"]:
        counts = Counter(b["label"] for b in result["beats"] if b["label"] is not None)
        return f"{result['input']}: {len(result['beats'])} beats " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())) + note
    hr = [v for v in result["hr_bpm"] if v is not None]
    if hr:
        return f"{result['input']}: {len(result['hr_bpm'])} windows, heart rate {min(hr):.0f}-{max(hr):.0f} bpm" + note
    counts = Counter(w["label"] for w in result["windows"] if w.get("label") is not None)
    return f"{result['input']}: {len(result['windows'])} windows " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())) + note


def _demo(args) -> int:
    from sdk.demo.run import run_demo

    run_demo(args.data_dir, args.out, args.broker, args.embedded_broker)
    if args.serve:
        from sdk.demo.serve import serve_demo

        serve_demo(Path(args.out) / "alerts.sqlite", args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
