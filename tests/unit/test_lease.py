"""One writer per model_dir (`tfps.checkpoints.lease`) and storage errors in one line
(`tfps.checkpoints.storage`), without TensorFlow: live, stale and garbage leases, take-overs,
a lease lost to a take-over, and the errno behind TF-style messages."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import threading
import time

import pytest

from tfps.checkpoints import lease, storage
from tfps.checkpoints.lease import LEASE_FILE, Holder


class Clock:
    def __init__(self, now: float = 10_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def _acquire(path, clock, said=None):
    return lease.acquire(str(path), clock=clock, sleep=clock.sleep,
                         say=(said.append if said is not None else lambda line: None))


def _write(path, holder: Holder):
    (path / LEASE_FILE).write_bytes(holder.to_json())


def test_the_first_chief_takes_the_lease_and_releases_it(tmp_path, clock):
    held = _acquire(tmp_path / "run", clock)
    data = Holder.from_json((tmp_path / "run" / LEASE_FILE).read_bytes())
    assert data.pid == os.getpid() and data.token == held.holder.token
    held.release()
    assert not (tmp_path / "run" / LEASE_FILE).exists()


def test_a_live_holder_on_this_machine_makes_the_second_exit_2(tmp_path, clock, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = lease.this_process(clock())
        _write(tmp_path, dataclasses.replace(me, pid=holder.pid, token="theirs"))
        with pytest.raises(lease.ModelDirInUse) as raised:
            _acquire(tmp_path, clock)
    finally:
        holder.kill()
        holder.wait()
    assert raised.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"tfps: model_dir {tmp_path} is in use by another job (host ")
    assert f"pid {holder.pid}" in line


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(tmp_path, clock):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _write(tmp_path, dataclasses.replace(lease.this_process(clock()), pid=gone.pid,
                                         token="old"))
    said = []
    held = _acquire(tmp_path, clock, said)
    assert held.holder.token != "old"
    [line] = said
    assert f"took over the lease of model_dir {tmp_path}" in line and "is gone" in line
    held.release()


def test_a_holder_elsewhere_that_renews_is_live(tmp_path, clock, capsys):
    other = Holder("elsewhere", 7, clock(), clock(), boot="x", pidns="y", token="t")
    _write(tmp_path, other)
    renewed = []

    def sleep(seconds):  # the other chief renews while this one watches
        clock.now += seconds
        if not renewed:
            renewed.append(True)
            _write(tmp_path, dataclasses.replace(other, heartbeat=clock()))

    with pytest.raises(lease.ModelDirInUse):
        lease.acquire(str(tmp_path), clock=clock, sleep=sleep, say=lambda line: None)
    assert "host elsewhere, pid 7" in capsys.readouterr().err


def test_a_holder_elsewhere_whose_heartbeat_stands_still_is_stale(tmp_path, clock):
    # Its host's clock runs 1000 s ahead: its heartbeat never looks old, yet it stands still.
    ahead = clock() + 1000
    _write(tmp_path, Holder("elsewhere", 7, ahead, ahead, boot="x", pidns="y", token="t"))
    said = []
    start = clock()
    held = _acquire(tmp_path, clock, said)
    assert lease.STALE_S <= clock() - start <= lease.STALE_S + 2  # watched, no clock trust
    assert "its heartbeat did not change" in said[0]
    held.release()


def test_an_old_heartbeat_is_stale_at_once(tmp_path, clock):
    _write(tmp_path, Holder("elsewhere", 7, 0.0, clock() - 100, token="t"))
    said = []
    _acquire(tmp_path, clock, said).release()
    assert "heartbeat 100s old" in said[0]


def test_an_unreadable_lease_is_stale_once_old(tmp_path, clock):
    (tmp_path / LEASE_FILE).write_bytes(b"\x00garbage")
    os.utime(tmp_path / LEASE_FILE, (clock() - 100, clock() - 100))
    said = []
    _acquire(tmp_path, clock, said).release()
    assert said


def test_a_holder_taken_over_stops_writing(tmp_path, clock):
    first = _acquire(tmp_path, clock)
    _write(tmp_path, Holder("thief", 9, clock(), clock(), token="other"))
    first.renew()
    with pytest.raises(lease.LeaseLost, match="lost its lease .*taken over by host thief"):
        first.check()
    first.release()  # not ours any more: left alone
    assert Holder.from_json((tmp_path / LEASE_FILE).read_bytes()).token == "other"


def test_renew_moves_the_heartbeat(tmp_path, clock):
    held = _acquire(tmp_path, clock)
    clock.now += 7
    held.renew()
    assert Holder.from_json((tmp_path / LEASE_FILE).read_bytes()).heartbeat == clock()
    held.release()


def test_a_renewal_in_flight_does_not_write_a_released_lease_back(tmp_path, clock,
                                                                   monkeypatch):
    # The renewal thread reads the lease, the release removes it, the renewal writes: a
    # lease left behind that nobody renews (Keras fit releases while the process lives on).
    held = _acquire(tmp_path, clock)
    fsync, releasing = os.fsync, []

    def release_meanwhile(fd):  # the renewal has read the lease and is writing it
        if not releasing:
            releasing.append(threading.Thread(target=held.release))
            releasing[0].start()
            time.sleep(0.2)  # the release, unless it waits for this renewal, is done by now
        fsync(fd)

    monkeypatch.setattr(os, "fsync", release_meanwhile)
    held.renew()
    releasing[0].join(5)
    assert not (tmp_path / LEASE_FILE).exists()
    held.renew()  # released: nothing written
    assert not (tmp_path / LEASE_FILE).exists() and held.lost is None


# ------------------------------------------------------------------ storage errors
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT])
def test_storage_errors_are_found_in_oserrors_and_in_tf_messages(code):
    text = os.strerror(code)
    assert storage.storage_error(OSError(code, text)) == text
    tf_like = RuntimeError(f"Graph execution error:\n... /job:ps/replica:0/task:1 ...\n"
                           f"Failed to write ckpt-215_temp/part-00001; {text}\n[[{{node save}}]]")
    assert storage.storage_error(tf_like) == text


def test_other_errors_are_not_storage_errors():
    assert storage.storage_error(ValueError("shapes do not match")) is None
    assert storage.storage_error(OSError(errno.ECONNREFUSED, "refused")) is None


def test_fail_prints_one_line_and_exits_1(capsys):
    raised = storage.fail("checkpoint", "/d/checkpoints/ckpt-215", "No space left on device",
                          "the last good checkpoint is ckpt-200")
    assert isinstance(raised, SystemExit) and raised.code == 1
    assert capsys.readouterr().err == (
        "tfps: checkpoint /d/checkpoints/ckpt-215 failed: No space left on device; the last "
        "good checkpoint is ckpt-200\n")


def test_a_writer_whose_model_dir_cannot_be_made_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    model_dir = str(tmp_path / "file" / "run")
    with pytest.raises(storage.StorageFailed) as raised:
        lease.hold(model_dir)
    assert raised.value.code == 1
    assert capsys.readouterr().err == (
        f"tfps: model_dir {model_dir} failed: Not a directory; nothing was written\n")


def test_a_writer_takes_the_lease_as_acquire_does(tmp_path):
    held = lease.hold(str(tmp_path))
    try:
        assert (tmp_path / LEASE_FILE).exists()
    finally:
        held.release()
    assert not (tmp_path / LEASE_FILE).exists()
