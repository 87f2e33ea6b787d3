"""The chief's ledger of an epoch's records (`tfps.data.ledger`), against a reference, and the
file checks that run before training (`tfps.data.sources`). No TensorFlow."""

from __future__ import annotations

import json
import os
import random
import struct

import numpy as np
import pytest

from tfps.data import sources
from tfps.data.ledger import Ledger


def reference_ids(counts, epoch, shuffle, seed, start, records):
    """The record ids at positions start..start+records-1 of `epoch`, from first principles."""
    order = (np.random.default_rng([seed, epoch]).permutation(len(counts)) if shuffle
             else np.arange(len(counts)))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ids = [first[f] + k for f in order for k in range(counts[f])]
    return ids[start:start + records]


@pytest.mark.parametrize("shuffle", [False, True])
def test_units_cover_every_record_once_per_epoch_whatever_the_unit_sizes(shuffle):
    counts = [5, 0, 7, 3, 1]
    ledger = Ledger(counts, batch_size=2, shuffle=shuffle, seed=3)
    rng = random.Random(0)
    units = [ledger.next_unit(rng.choice([1, 2, 4, 6])) for _ in range(40)]
    seen: dict[int, list[int]] = {}
    for unit in units:
        ids = []
        for file, first, count in unit.segments:
            ids += [sum(counts[:file]) + first + k for k in range(count)]
        assert ids == reference_ids(counts, unit.epoch, shuffle, 3, unit.start, unit.records)
        seen.setdefault(unit.epoch, []).extend(ids)
    for epoch in sorted(seen)[:-1]:  # every finished epoch: each record exactly once
        assert sorted(seen[epoch]) == list(range(sum(counts))), epoch
    assert all(u.records >= 1 for u in units)


def test_a_unit_never_spans_two_epochs_and_the_last_one_is_short():
    ledger = Ledger([4, 3], batch_size=2)
    sizes = [ledger.next_unit(4).records for _ in range(4)]
    assert sizes == [4, 3, 4, 3]  # 7 records an epoch, units of at most 4
    assert ledger.steps_per_epoch == 4


def test_visitation_counts_once_more_and_missing_in_any_finishing_order():
    ledger = Ledger([10, 10], batch_size=4, shuffle=True, seed=1)
    units = [ledger.next_unit(8) for _ in range(6)]  # 20 records an epoch: 8, 8, 4, 8, 8, 4
    random.Random(2).shuffle(units)
    for unit in units[:-1]:
        ledger.finish(unit)
    left = units[-1]
    v = ledger.visitation(2)
    assert (v.seen_once, v.seen_more, v.missing) == (40 - left.records, 0, left.records)
    ledger.finish(left)
    ledger.finish(units[0])  # a unit counted twice is visible
    v = ledger.visitation(2)
    assert (v.seen_once, v.seen_more, v.missing) == (40 - units[0].records,
                                                     units[0].records, 0)


def test_state_round_trips_and_units_in_flight_are_handed_out_again():
    ledger = Ledger([6, 6], batch_size=2, shuffle=True, seed=5)
    done = [ledger.next_unit(4) for _ in range(2)]
    pending = ledger.next_unit(4)
    for unit in done:
        ledger.finish(unit)
    state = ledger.state()
    resumed = Ledger([6, 6], batch_size=2, shuffle=True, seed=5)
    resumed.restore(state)
    again = resumed.next_unit(4)
    assert (again.epoch, again.start, again.segments) == (pending.epoch, pending.start,
                                                          pending.segments)
    resumed.finish(again)
    assert resumed.visitation(1).seen_once == 12
    assert json.loads(state)["position"] == 12


def test_state_of_other_files_is_refused():
    state = Ledger([6, 6], batch_size=2).state()
    with pytest.raises(ValueError, match="records in files of other sizes"):
        Ledger([6, 7], batch_size=2).restore(state)
    with pytest.raises(ValueError, match="malformed"):
        Ledger([6, 6], batch_size=2).restore("{}")


def test_counts_by_id_follow_the_epochs_file_order():
    ledger = Ledger([2, 3], batch_size=1, shuffle=True, seed=0)
    unit = ledger.next_unit(3)
    ledger.finish(unit)
    seen = ledger.counts_by_id(0)
    expected = np.zeros(5, np.int32)
    expected[reference_ids([2, 3], 0, True, 0, 0, 3)] = 1
    assert seen.tolist() == expected.tolist()


# ---------------------------------------------------------------------------- sources
def test_no_file_matches_names_the_pattern(tmp_path):
    with pytest.raises(sources.DataError, match=r"no file matches '.*\*\.tfrecord'"):
        sources.resolve(str(tmp_path / "*.tfrecord"))
    with pytest.raises(sources.DataError, match="no file matches '.*missing.csv'"):
        sources.resolve([str(tmp_path / "missing.csv")])
    with pytest.raises(sources.DataError, match="no files given"):
        sources.resolve([])


def test_a_directory_or_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(sources.DataError, match="is a directory"):
        sources.resolve(str(tmp_path))
    locked = tmp_path / "locked.tfrecord"
    locked.write_bytes(b"x")
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything
            pytest.skip("running as root: every file is readable")
        with pytest.raises(sources.DataError, match="locked.tfrecord': cannot read it"):
            sources.resolve(str(locked))
    finally:
        os.chmod(locked, 0o644)


def test_globs_sorted_lists_kept_in_order_duplicates_dropped(tmp_path):
    for name in ("b.tfrecord", "a.tfrecord"):
        (tmp_path / name).write_bytes(b"")
    assert [os.path.basename(p) for p in sources.resolve(str(tmp_path / "*.tfrecord"))] == \
        ["a.tfrecord", "b.tfrecord"]
    listed = [str(tmp_path / "b.tfrecord"), str(tmp_path / "*.tfrecord")]
    assert [os.path.basename(p) for p in sources.resolve(listed)] == ["b.tfrecord",
                                                                      "a.tfrecord"]


def test_formats_from_names_or_given():
    assert sources.detect_format(["d/train-00000-of-00008"]) == "tfrecord"
    assert sources.detect_format(["x.tfrec", "y.tfrecord.gz"]) == "tfrecord"
    assert sources.detect_format(["x.csv"]) == "csv"
    assert sources.detect_format(["x.dat"], "csv") == "csv"
    with pytest.raises(sources.DataError, match="cannot tell its format"):
        sources.detect_format(["x.dat"])
    with pytest.raises(sources.DataError, match="mix formats"):
        sources.detect_format(["a.tfrecord", "b.csv"])
    with pytest.raises(sources.DataError, match="Argument `format`"):
        sources.detect_format(["a.tfrecord"], "parquet")


def _tfrecord(records: list[bytes]) -> bytes:
    out = b""
    for data in records:  # CRCs are not checked by the framing walk
        out += struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
    return out


def test_tfrecord_framing_walk_finds_the_record_cut_short(tmp_path):
    path = tmp_path / "x.tfrecord"
    whole = _tfrecord([b"a" * 10, b"bb" * 7, b"c" * 3])
    path.write_bytes(whole)
    assert sources.scan_tfrecord(str(path)) == (3, None, "")
    path.write_bytes(whole[:-5])
    records, bad, reason = sources.scan_tfrecord(str(path))
    assert (records, bad) == (2, 2) and "cut short" in reason
    path.write_bytes(whole)
    assert sources.scan_tfrecord(str(path), stop_at_offset=30)[1] == 1  # inside record 1


def test_csv_lines_counted_with_or_without_header_and_last_newline(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n3,4")
    assert sources.count_csv(str(path), header=True) == 2
    assert sources.count_csv(str(path), header=False) == 3
    path.write_text("")
    assert sources.count_csv(str(path), header=True) == 0


def test_fileset_maps_global_ids_to_files():
    files = sources.FileSet(("a", "b", "c"), (2, 0, 3), "tfrecord")
    assert files.records == 5 and files.offsets() == [0, 2, 2]
    assert files.where(0) == ("a", 0) and files.where(4) == ("c", 2)
