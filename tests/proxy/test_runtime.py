"""One runtime per process: built once, reached through runtime.current(), never shared with a forked child."""

import os

import pytest

from proxy import config, forwarding, recording, runtime, ssrf


@pytest.mark.django_db
def test_the_process_has_one_runtime_reached_through_one_accessor(fresh_runtime):
    assert runtime.current() is fresh_runtime
    assert runtime.start() is fresh_runtime  # a second start builds nothing new
    # The modules' own functions serve this runtime's state.
    assert forwarding.session() is fresh_runtime.upstream.session()
    config.current()
    assert fresh_runtime.config.snapshot is not None
    assert recording.pending() == fresh_runtime.log_writer.pending() == 0
    ssrf.target_allowed("http://127.0.0.1:9/v1")
    assert fresh_runtime.ssrf.verdicts


@pytest.mark.django_db
def test_a_new_runtime_starts_from_nothing(fresh_runtime):
    forwarding.session()
    config.current()
    other = runtime.build()
    assert other.config.snapshot is None
    assert other.upstream._session is None
    assert other.ssrf.verdicts == {} and other.ssrf.pins == {}
    assert other.log_writer.pending() == 0 and not other.log_writer.started
    assert dict(other.balancer.inflight) == {}


def test_every_runtime_gets_the_hooks_of_the_layers_above(fresh_runtime):
    """The jobs app adds its submitter and its /metrics collector to each runtime as it is built,
    so a runtime built after a fork (or for a test) queues jobs like the first one."""
    from jobs.metrics import JobCollector
    from jobs.submission import check, submit

    assert (fresh_runtime.job_submitter, fresh_runtime.job_check) == (submit, check)
    assert [type(c) for c in fresh_runtime.collectors] == [JobCollector]


def test_a_forked_child_builds_its_own_runtime(fresh_runtime):
    """Threads, locks and sockets do not survive a fork: the child never uses its parent's runtime."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report whether its runtime is the parent's, then leave at once
        try:
            child = runtime.current()
            answer = b"shared" if child is fresh_runtime else f"own {child.pid == os.getpid()}".encode()
            os.write(write, answer)
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 100)
    os.close(read)
    assert answer == b"own True"
    assert runtime.current() is fresh_runtime  # the parent keeps its own
