"""The suite's offline guard blocks non-loopback network access, here and in child processes
(notebook kernels are child processes), and leaves loopback open."""

import os
import socket
import subprocess
import sys
import threading

import pytest

import conftest


@pytest.fixture()
def private_log(tmp_path, monkeypatch):
    """Send this test's deliberate violations to a log of its own, not the suite's."""
    log = tmp_path / "network.log"
    monkeypatch.setenv("BNCOURSE_NETWORK_LOG", str(log))
    return log


def test_blocks_non_loopback_in_process(private_log):
    with pytest.raises(conftest._guard.NetworkBlocked, match="192.0.2.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(conftest._guard.NetworkBlocked, match="name lookup"):
        socket.getaddrinfo("example.org", 443)
    assert "192.0.2.1" in private_log.read_text()


def test_loopback_stays_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    t.start()
    with socket.create_connection(("localhost", port), timeout=5):
        pass
    t.join(5)
    assert accepted
    accepted[0].close()
    server.close()


def test_child_processes_are_guarded_too(private_log):
    code = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode != 0
    assert "NetworkBlocked" in proc.stderr and "offline guard" in proc.stderr
    assert "192.0.2.1" in private_log.read_text()


def test_torchvision_download_of_a_missing_file_is_blocked_and_logged(tmp_path, private_log):
    """What would happen if data/ were incomplete and torchvision tried to fetch it: torchvision
    catches the error and tries its other mirrors, but every attempt is blocked and logged."""
    from torchvision import datasets

    with pytest.raises(RuntimeError, match="offline guard"):
        datasets.MNIST(root=str(tmp_path), download=True)
    assert private_log.read_text().count("blocked") >= 1


def test_a_test_that_touched_the_network_fails_even_if_the_error_was_swallowed(tmp_path):
    """The pytest hook fails the test during which the log grew, whatever the code did with the error."""

    class Item:
        nodeid = "fake::test"

    real_log = conftest._LOG
    conftest._LOG = str(tmp_path / "log")
    try:
        open(conftest._LOG, "w").close()
        hook = conftest.pytest_runtest_call(Item())
        next(hook)
        with open(conftest._LOG, "a") as fh:
            fh.write("blocked connect to ('192.0.2.1', 80)\n")
        with pytest.raises(conftest._guard.NetworkBlocked, match="fake::test tried to reach the network"):
            hook.send(None)
        clean = conftest.pytest_runtest_call(Item())
        next(clean)
        with pytest.raises(StopIteration):
            clean.send(None)
    finally:
        conftest._LOG = real_log
