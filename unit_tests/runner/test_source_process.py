"""The runner's source process, seen from the runner (``collection_runner.source_process``): what its lines become, how
its errors and its deaths are reported, how a stop reaches it and how it is ended. The child here is a small script
standing in for ``source_child`` (the real one runs in integration_tests/test_runner_source_process.py)."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from collection_runner.source_process import SourceProcess, SourceProgress
from destination_collection.protocol_loop import JsonRecord


def child(script: str) -> SourceProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0,
    )
    return SourceProcess(proc)


LINES = r'''
import sys
out = sys.stdout.buffer
out.write(b'R\torders\t1700000000000\t{"id":1,"note":"tab\\there"}\n')
out.write(b'{"type":"RECORD","record":{"stream":"orders","namespace":"ns","data":{"id":2},"emitted_at":5}}\n')
out.write(b'{"type":"_SOURCE_PROGRESS","streams":{"orders":{"records":2,"newest_arrival":"2026-01-01T00:00:00Z"}}}\n')
out.write(b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"orders"},"stream_state":{"v":1}}}}\n')
out.write(b'a stray line\n')
out.write(b'R\torders\t1700000000001\t{"id":3}')  # the last line without its newline
'''


def test_lines_become_json_records_record_lines_progress_and_dicts_in_order():
    process = child(LINES)
    try:
        messages = list(process.messages())
    finally:
        process.close()
    assert messages[0] == JsonRecord("orders", None, '{"id":1,"note":"tab\\there"}', 1700000000000, 51)
    assert messages[1].startswith(b'{"type":"RECORD"') and b'"namespace":"ns"' in messages[1]
    assert messages[2] == SourceProgress({"orders": {"records": 2, "newest_arrival": "2026-01-01T00:00:00Z"}})
    assert messages[3]["type"] == "STATE" and messages[3]["state"]["stream"]["stream_state"] == {"v": 1}
    # the stray line is logged, never passed on; the last one, without its newline (the child killed while writing
    # it), is dropped: never half a record in the store
    assert len(messages) == 4


def test_the_childs_error_is_raised_with_its_failure_type_after_what_came_before_it():
    process = child(r'''
        import sys
        sys.stdout.buffer.write(b'R\ts\t1\t{"a":1}\n{"type":"_SOURCE_FAILED","failure_type":"config_error","message":"Stream s: not found"}\n')
        sys.exit(2)
    ''')
    got = []
    try:
        with pytest.raises(AirbyteTracedException) as caught:
            for message in process.messages():
                got.append(message)
    finally:
        process.close()
    assert got == [JsonRecord("s", None, '{"a":1}', 1, 14)]
    assert caught.value.failure_type == FailureType.config_error and caught.value.message == "Stream s: not found"


@pytest.mark.parametrize("script, words", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "was killed by SIGKILL"),
    ("import sys; sys.exit(7)", "exited with 7"),
])
def test_a_child_that_ends_without_a_word_is_a_system_error_naming_it(script, words):
    process = child(script)
    try:
        with pytest.raises(AirbyteTracedException) as caught:
            list(process.messages())
    finally:
        process.close()
    assert caught.value.failure_type == FailureType.system_error
    assert f"source process (pid {process.pid}) {words}" in caught.value.message and "run again" in caught.value.message


def test_the_stop_request_reaches_the_child_as_sigterm_and_it_ends_on_its_own():
    process = child(r'''
        import signal, sys, time
        stopped = []
        signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
        sys.stdout.buffer.write(b'{"type":"LOG","log":{"level":"INFO","message":"ready"}}\n'); sys.stdout.flush()
        deadline = time.monotonic() + 20
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.01)
        sys.stdout.buffer.write(b'{"type":"STATE","state":{"type":"STREAM","stream":{"stream_descriptor":{"name":"s"},"stream_state":{"final":true}}}}\n')
    ''')
    stop = threading.Event()
    process.forward_stop(stop)
    messages = process.messages()
    try:
        assert next(messages)["type"] == "LOG"
        stop.set()
        started = time.monotonic()
        rest = list(messages)
        assert time.monotonic() - started < 5
    finally:
        process.close()
    assert rest == [{"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "s"}, "stream_state": {"final": True}}}}]
    assert process.proc.returncode == 0


def test_close_kills_a_child_that_ignores_the_stop_and_reaps_it():
    process = child(r'''
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stdout.buffer.write(b'{"type":"LOG","log":{"level":"INFO","message":"ready"}}\n'); sys.stdout.flush()
        time.sleep(60)
    ''')
    stop = threading.Event()
    process.forward_stop(stop)
    messages = process.messages()
    assert next(messages)["type"] == "LOG"
    stop.set()
    time.sleep(0.7)  # the forwarder's SIGTERM was sent (and ignored)
    errors = []

    def read_on() -> None:  # the pump's thread, still reading
        try:
            list(messages)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=read_on, daemon=True)
    reader.start()
    started = time.monotonic()
    process.close()
    assert time.monotonic() - started < 2
    assert process.proc.returncode == -signal.SIGKILL
    reader.join(5)
    assert not reader.is_alive() and errors == []  # it saw the end of file and ended quietly: the runner was done with it


@pytest.mark.parametrize("line", [b"R\torders\t17000\n", b"R\torders\tnot-a-number\t{}\n", b"R\torders\t1\t[1]\n"])
def test_a_record_line_out_of_the_framing_is_an_error_not_a_record(line):
    process = child(f"import sys; sys.stdout.buffer.write({line!r})")
    try:
        with pytest.raises(AirbyteTracedException) as caught:
            list(process.messages())
    finally:
        process.close()
    assert caught.value.failure_type == FailureType.system_error and "not in the runner's framing" in caught.value.message


def test_a_following_child_that_ends_without_being_asked_is_an_error():
    process = child("pass")
    process._follow = True  # what send_job(follow_mode=True) records
    try:
        with pytest.raises(AirbyteTracedException) as caught:
            list(process.messages())
    finally:
        process.close()
    assert "stopped without the runner asking" in caught.value.message


def test_the_childs_error_says_whether_it_came_after_the_stop():
    process = child(r"""
        import sys
        sys.stdout.buffer.write(b'{"type":"_SOURCE_FAILED","failure_type":"transient_error","message":"late","after_stop":true}\n')
    """)
    try:
        with pytest.raises(AirbyteTracedException) as caught:
            list(process.messages())
    finally:
        process.close()
    assert caught.value.raised_after_stop is True


def test_after_a_stop_the_pump_gives_the_write_loop_a_bounded_amount_however_much_the_child_read():
    """A child that read far ahead of a busy writer (here: 30,000 records before the stop) and then ends on the
    SIGTERM: only ``max_after_stop`` messages reach the write loop after the stop, in order, the rest is dropped."""
    import logging

    from collection_runner.source_process import message_size
    from collection_runner.source_pump import SourcePump

    process = child(r"""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        out = sys.stdout.buffer
        for i in range(30_000):
            out.write(b'R\ts\t1\t{"n":%d}\n' % i)
        out.flush()
        time.sleep(30)
    """)
    stop = threading.Event()
    process.forward_stop(stop)
    pump = SourcePump(process.messages(), stop, logging.getLogger("test"), grace_seconds=1.0, max_buffered=100_000,
                      size_of=message_size, max_after_stop=1_000).start()
    got = []
    try:
        for message in pump.messages():
            if isinstance(message, JsonRecord):
                got.append(message)
                if len(got) == 500:
                    time.sleep(1.0)  # the writer is busy: the pump reads on
                    stop.set()
    finally:
        pump.close()
        process.close()
    assert [r.data for r in got] == [f'{{"n":{i}}}' for i in range(len(got))]  # in order, no gap
    assert 500 < len(got) <= 1_501 and pump.dropped_after_stop > 20_000


@pytest.mark.parametrize("runner_stops", [False, True])
def test_a_child_stopped_by_a_sigterm_the_runner_did_not_send_is_an_error_unless_the_runner_is_stopping_too(runner_stops):
    """A SIGTERM to the whole process group reaches the child at once and the runner when its main thread next runs
    Python (maybe after a commit): a child that says it was stopped while the runner is not stopping within 2 s was
    stopped from outside, and the run must not end as if everything was read."""
    process = child(r'''
        import sys
        sys.stdout.buffer.write(b'{"type":"_SOURCE_STOPPED"}\n')
    ''')
    stop = threading.Event()
    process.forward_stop(stop)  # registered, never forwarded: the child ends first
    if runner_stops:
        threading.Timer(0.5, stop.set).start()
    try:
        if runner_stops:
            assert list(process.messages()) == []
        else:
            with pytest.raises(AirbyteTracedException) as caught:
                list(process.messages())
            assert "stopped without the runner asking" in caught.value.message
    finally:
        process.close()


def test_the_child_runs_the_runners_own_code_whatever_the_working_directory(tmp_path, monkeypatch, capfd):
    fake = tmp_path / "collection_runner"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "source_child.py").write_text("import sys; sys.stderr.write('HIJACKED\\n')")
    monkeypatch.chdir(tmp_path)
    process = SourceProcess.spawn()
    try:
        process.proc.stdin.close()  # no job: the real child exits 0 without a word
        assert process.proc.wait(60) == 0
    finally:
        process.close()
    assert "HIJACKED" not in capfd.readouterr().err
