"""Runs that lose a worker or are stopped: nothing finished is lost, nothing half-written is left."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from medlite.edge import batch, load

OUTSIDE = os.path.dirname(os.path.abspath(__file__))  # never the checkout's root (see test_no_tensorflow)


def test_a_decoding_worker_killed_mid_run_costs_no_record(int8_model, data_dir):
    """A worker process that dies (as a decoder's segfault would kill it) while files are in flight: those files
    are decoded again, alone, and the run delivers every record in order."""
    model = load(int8_model)
    files = [str(p) for p in sorted((data_dir / "busi" / "images" / "benign").glob("*.png"))[:40]]
    expected = [(r["file"], r["scores"]) for r in batch.run(model, files, workers=0)]
    got, killed = [], None
    for rec in batch.run(model, files, workers=2):
        got.append((rec["file"], rec["scores"]))
        if killed is None:
            killed = multiprocessing.active_children()[0].pid
            os.kill(killed, signal.SIGKILL)
    assert killed and got == expected


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_a_stopped_predict_leaves_valid_json_lines_and_says_how_far_it_got(int8_model, data_dir, tmp_path, sig,
                                                                          code, word):
    """Ctrl-C or SIGTERM: the run ends within seconds, its workers with it, and every line written is whole."""
    folder = tmp_path / "many"
    folder.mkdir()
    images = sorted((data_dir / "busi" / "images").rglob("*.png"))
    for i in range(4000):  # links to real images: a long run without copying data
        (folder / f"{i:05d}.png").symlink_to(images[i % len(images)])
    out = tmp_path / "p.jsonl"
    # SIGINT as a terminal's foreground job has it (a background shell would hand it down ignored).
    proc = subprocess.Popen([sys.executable, "-m", "medlite", "predict", str(int8_model), str(folder), "--out",
                             str(out), "-q"], cwd=OUTSIDE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 20):
        time.sleep(0.2)
    workers = _children(proc.pid)
    proc.send_signal(sig)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and word in err and time.time() - t0 < 15
    lines = out.read_text().splitlines()
    assert 20 <= len(lines) < 4000
    assert f"stopped after {len(lines)} of 4000 file(s)" in err
    time.sleep(1)
    assert workers and not any(os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" for pid in workers)
    assert all(json.loads(line)["status"] == "ok" for line in lines)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_signal_while_a_record_is_written_acts_once_it_is_counted():
    """The window that once let a stopped run's summary miss its last line: a signal while busy waits for
    release; a second one while the first waits acts at once (a write blocked on a full pipe). A SIGINT
    that the process was started with ignored (a background job's) stays ignored."""
    from medlite.commands.predict import _Held

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _Held():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as a terminal's foreground job has it
        counted = False
        with _Held() as held:
            held.busy = True
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler in this thread, here
            counted = True
            with pytest.raises(KeyboardInterrupt):
                held.release()
            held.busy = True
            os.kill(os.getpid(), signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
        assert counted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
