"""A call's end (its close(): log row, budgets, counters) waits for the other answers ready in the
same turn of the event loop, and still runs whatever happens to its greenlet meanwhile
(gateway_project/worker.py, CloseAfterOthers)."""

import gevent

from gateway_project.worker import CloseAfterOthers


class Answer:
    def __init__(self, events: list):
        self.events = events

    def __iter__(self):
        return iter([b"body"])

    def close(self):
        self.events.append("closed")


def test_the_answer_is_passed_on_unchanged():
    assert list(CloseAfterOthers(Answer([]))) == [b"body"]


def test_other_ready_greenlets_run_before_the_close():
    events = []
    answer = CloseAfterOthers(Answer(events))
    others = [gevent.spawn(events.append, f"other {n}") for n in range(3)]
    answer.close()
    gevent.joinall(others)
    assert events == ["other 0", "other 1", "other 2", "closed"]


def test_the_close_runs_even_when_the_greenlet_is_killed_while_it_waits():
    events = []
    closing = gevent.spawn(CloseAfterOthers(Answer(events)).close)
    gevent.sleep(0)  # it starts, and yields in its close
    closing.kill()
    assert events == ["closed"]


def test_an_answer_without_close_is_fine():
    CloseAfterOthers([b"x"]).close()
