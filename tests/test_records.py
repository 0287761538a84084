import numpy as np
import pytest

from conftest import DATA, needs_mitdb, needs_svdb
from sdk.data import mitdb
from sdk.data.records import check_signal, read_database_record, read_input, resample, resampled_index
from sdk.errors import HeartSightError


def test_missing_record_names_record_directory_and_fetch_command(tmp_path):
    with pytest.raises(HeartSightError) as error:
        read_database_record("mitdb", "100", tmp_path)
    message = str(error.value)
    assert "mitdb/100" in message and str(tmp_path / "mitdb") in message and "heartsight data fetch mitdb" in message


def test_corrupt_wfdb_header_is_a_clear_error(tmp_path):
    (tmp_path / "bad.hea").write_text("bad 2 notanumber 100\nnonsense\n")
    with pytest.raises(HeartSightError, match="sampling frequency 'notanumber' is not a positive number of Hz"):
        read_input(tmp_path / "bad")
    (tmp_path / "bad.hea").write_text("bad 2 360 100\nnonsense\n")
    with pytest.raises(HeartSightError, match="cannot read WFDB record"):
        read_input(tmp_path / "bad")


def test_npy_and_csv_need_a_positive_fs(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(100))
    with pytest.raises(HeartSightError, match="--fs"):
        read_input(tmp_path / "x.npy")
    with pytest.raises(HeartSightError, match="positive"):
        read_input(tmp_path / "x.npy", fs=0)
    with pytest.raises(HeartSightError, match="positive"):
        read_input(tmp_path / "x.npy", fs=-5)


def test_csv_with_header_reads_columns_as_channels(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("ecg,ppg\n1,2\n3,4\n5,6\n")
    recording = read_input(path, fs=100)
    assert recording.signal.shape == (3, 2)
    assert recording.channel(1).tolist() == [2, 4, 6]
    with pytest.raises(HeartSightError, match="out of range"):
        recording.channel(2)


def test_check_signal_refuses_empty_short_and_non_finite():
    with pytest.raises(HeartSightError, match="empty"):
        check_signal(np.zeros(0), "x", 10)
    with pytest.raises(HeartSightError, match="at least 10"):
        check_signal(np.zeros(5), "x", 10)
    signal = np.zeros(20)
    signal[7] = np.nan
    with pytest.raises(HeartSightError, match="first at sample 7"):
        check_signal(signal, "x", 10)


def test_resample_changes_length_by_the_rate_ratio_and_keeps_a_sine():
    fs_in, fs_out = 360.0, 128.0
    t = np.arange(3600) / fs_in
    y = resample(np.sin(2 * np.pi * 5 * t), fs_in, fs_out)
    assert len(y) == 1280
    t_out = np.arange(len(y)) / fs_out
    assert np.allclose(y[100:-100], np.sin(2 * np.pi * 5 * t_out)[100:-100], atol=0.01)
    assert resampled_index(np.array([360, 720]), fs_in, fs_out).tolist() == [128, 256]


def test_aami_mapping_and_inter_patient_split():
    assert set(mitdb.DS1).isdisjoint(mitdb.DS2)
    assert len(mitdb.DS1) == len(mitdb.DS2) == 22
    assert set(mitdb.PACED).isdisjoint(set(mitdb.DS1) | set(mitdb.DS2))
    assert mitdb.SYMBOL_TO_AAMI["L"] == "N" and mitdb.SYMBOL_TO_AAMI["a"] == "S" and mitdb.SYMBOL_TO_AAMI["E"] == "V"
    assert "Q" not in mitdb.SYMBOL_TO_AAMI and "/" not in mitdb.SYMBOL_TO_AAMI


@needs_mitdb
def test_record_114_selects_mlii_by_name_and_labels_beats():
    record = mitdb.load_record("114", DATA)
    raw = read_database_record("mitdb", "114", DATA)
    assert raw.channels[1] == "MLII"
    assert np.array_equal(record.ecg, raw.signal[:, 1])
    labels = record.aami_labels
    assert len(labels) == len(record.beat_samples) > 1500
    assert set(np.unique(labels)) <= {-1, 0, 1, 2, 3}


@needs_mitdb
def test_af_episodes_of_record_201():
    record = mitdb.load_record("201", DATA)
    minutes_af = record.af.sum() / record.fs / 60
    assert 5 < minutes_af < 15  # 201 holds about 10 minutes of AFIB
    assert not mitdb.load_record("100", DATA).af.any()


@needs_svdb
def test_svdb_records_read_lead_ecg1_with_their_s_beats():
    record = mitdb.load_record("svdb/801", DATA)
    raw = read_database_record("svdb", "801", DATA)
    assert record.fs == 128.0 and np.array_equal(record.ecg, raw.signal[:, raw.channels.index("ECG1")])
    assert np.sum(record.aami_labels == mitdb.AAMI_CLASSES.index("S")) > 10


@needs_svdb
def test_svdb_training_records_are_the_65_of_the_copy_and_no_others():
    """PhysioNet's other 13 svdb records are held out for evaluation: a full download must not train on them."""
    listed = (DATA / "svdb" / "RECORDS").read_text().split()
    assert sorted(mitdb.SVDB) == sorted(f"svdb/{name}" for name in listed) and len(mitdb.SVDB) == 65
    assert set(mitdb.SVDB).isdisjoint(mitdb.SPLITS["ALL"])


def test_a_record_of_an_unknown_database_is_refused_with_the_naming_rule():
    with pytest.raises(HeartSightError, match="svdb/NNN"):
        mitdb.load_record("afdb/04015")
