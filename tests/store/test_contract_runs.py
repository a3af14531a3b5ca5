"""RunStore on every store: mailings, their runs, claiming a run to resume it, statuses."""

from __future__ import annotations

import os
import socket
import time

import pytest

from engine.core.policy import Policy
from engine.errors import NotFound, StoreError
from engine.store.base import Store
from engine.store.models import Mailing, MailingOptions, Run, RunSpec, Schedule
from tests.store.helpers import make_world, new_run

pytestmark = pytest.mark.anyio


async def test_a_mailing_keeps_what_it_was_made_with(store: Store) -> None:
    w = await make_world(store, 1)
    before = time.time()
    policy = Policy(max_messages=2, period_days=7, scope="contact")
    mailing = await store.create_mailing(
        name="Spring", kind="trigger", resource="news", source=w.source(),
        template="hi {lead.name}", limit=10,
        document={"subject": "Spring", "tags": ["a", "b"], "nested": {"n": 1.5}},
        policy=policy,
    )
    assert isinstance(mailing, Mailing)
    assert (mailing.name, mailing.kind, mailing.resource, mailing.source, mailing.template,
            mailing.limit, mailing.policy) == (
        "Spring", "trigger", "news", w.source(), "hi {lead.name}", 10, policy)
    assert mailing.document == {"subject": "Spring", "tags": ["a", "b"], "nested": {"n": 1.5}}
    assert before - 1 <= mailing.created_at <= time.time() + 1
    assert await store.get_mailing(mailing.id) == mailing
    assert await store.latest_run(mailing.id) is None
    plain = await store.create_mailing(
        name="Plain", kind="broadcast", resource="news", source=w.source(), template="x",
        limit=None)
    assert (plain.limit, plain.document, plain.policy) == (None, {}, None)
    with pytest.raises(NotFound, match=f"no mailing {plain.id + 100}"):
        await store.get_mailing(plain.id + 100)


async def test_list_mailings_newest_first_with_or_without_documents(store: Store) -> None:
    w = await make_world(store, 1)
    made = [
        await store.create_mailing(name=f"m{i}", kind="broadcast", resource="news",
                                   source=w.source(), template="x", limit=None,
                                   document={"i": i})
        for i in range(3)
    ]
    listed = await store.list_mailings()
    assert [m.id for m in listed] == [m.id for m in reversed(made)]
    assert listed[0].document == {"i": 2}
    assert [m.name for m in await store.list_mailings(2)] == ["m2", "m1"]
    bare = await store.list_mailings(documents=False)
    assert [m.document for m in bare] == [{}, {}, {}]
    assert [m.name for m in bare] == ["m2", "m1", "m0"]


async def test_create_run_makes_a_broadcast_run_held_by_this_process(store: Store) -> None:
    w = await make_world(store, 1)
    before = time.time()
    mailing, run = await new_run(store, w)
    assert mailing.kind == "broadcast" and isinstance(run, Run)
    assert (run.mailing_id, run.status, run.pid, run.host) == (
        mailing.id, "running", os.getpid(), socket.gethostname())
    assert (run.checkpoint, run.next_seq, run.audience_done, run.counts, run.timings) == (
        0, 1, False, {}, {})
    assert run.finished_at is None and run.error is None
    assert before - 1 <= run.started_at <= time.time() + 1
    assert await store.get_run(run.id) == (mailing, run)
    assert await store.latest_run(mailing.id) == run
    with pytest.raises(NotFound, match=f"no run {run.id + 100}"):
        await store.get_run(run.id + 100)


async def test_start_run_adds_a_newer_run_to_the_mailing(store: Store) -> None:
    w = await make_world(store, 1)
    mailing, first = await new_run(store, w)
    second = await store.start_run(mailing.id)
    assert second.id != first.id and second.uid != first.uid
    assert second.mailing_id == mailing.id and second.status == "running"
    assert await store.latest_run(mailing.id) == second
    other, third = await new_run(store, w, name="other")
    listed = await store.list_runs()
    assert [(m.id, r.id) for m, r in listed] == [
        (other.id, third.id), (mailing.id, second.id), (mailing.id, first.id)]
    assert [r.id for _, r in await store.list_runs(1)] == [third.id]


async def test_set_run_status_stamps_the_finish_of_a_finished_or_failed_run(
    store: Store,
) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    await store.set_run_status(run.id, "interrupted")
    _, now = await store.get_run(run.id)
    assert (now.status, now.finished_at) == ("interrupted", None)
    before = time.time()
    await store.set_run_status(run.id, "finished", timings={"prepare": 1.5, "send": 0.25})
    _, now = await store.get_run(run.id)
    assert now.status == "finished" and now.timings == {"prepare": 1.5, "send": 0.25}
    assert now.finished_at is not None and before - 1 <= now.finished_at <= time.time() + 1
    _, failed = await new_run(store, w, name="f")
    await store.set_run_status(failed.id, "failed", error="gateway gone")
    _, now = await store.get_run(failed.id)
    assert (now.status, now.error) == ("failed", "gateway gone")
    assert now.finished_at is not None and now.timings == {}


async def test_claim_run_resumes_a_stopped_run_but_not_a_live_or_finished_one(
    store: Store,
) -> None:
    w = await make_world(store, 1)
    _, run = await new_run(store, w)
    with pytest.raises(StoreError, match=f"run {run.id} is still running"):
        await store.claim_run(run.id)
    await store.set_run_status(run.id, "interrupted", error="killed")
    claimed = await store.claim_run(run.id)
    assert (claimed.status, claimed.pid, claimed.host, claimed.error) == (
        "running", os.getpid(), socket.gethostname(), None)
    assert claimed.id == run.id and claimed.uid == run.uid
    await store.set_run_status(run.id, "finished")
    with pytest.raises(StoreError, match=f"run {run.id} is finished; nothing to resume"):
        await store.claim_run(run.id)
    with pytest.raises(NotFound):
        await store.claim_run(run.id + 100)


# -- mailing kinds and schedules -----------------------------------------------------------


async def test_a_mailing_keeps_its_options_and_a_run_its_spec(store: Store) -> None:
    w = await make_world(store, 1)
    options = MailingOptions(
        variants=["A {lead.name}", "B"], test_share=30.0, winner="clicks", wait=5.0,
        control=2.5, ignore_global_control=True,
        schedule=Schedule(cron="0 10 * * MON#1", timezone="Europe/Moscow",
                          until="2027-06-01T00:00", local_time=True, late="next"),
    )
    mailing = await store.create_mailing(
        name="ab", kind="multivariate", resource="news", source=w.source(),
        template="A {lead.name}", limit=None, options=options, next_launch=1_800_000_000.0)
    assert (mailing.kind, mailing.options, mailing.state, mailing.next_launch) == (
        "multivariate", options, "scheduled", 1_800_000_000.0)
    assert await store.get_mailing(mailing.id) == mailing
    assert (await store.list_mailings(documents=False))[0].options == options
    plain = await store.create_mailing(name="p", kind="broadcast", resource="news",
                                       source=w.source(), template="x", limit=None)
    assert (plain.options, plain.state, plain.next_launch) == (MailingOptions(), "draft", None)
    spec = RunSpec(phase="test", variant=1, share=(0.1, 0.2), due=1_800_000_000.0, missed=2,
                   decided={"1": 3.0})
    run = await store.start_run(mailing.id, spec)
    assert run.spec == spec
    assert (await store.get_run(run.id))[1].spec == spec
    trial = await store.start_run(mailing.id, RunSpec(phase="trial", is_test=True,
                                                      phones=["+447911000001"], profile_id=7))
    assert [r.spec.phase for r in await store.mailing_runs(mailing.id)] == ["test", "trial"]
    assert (await store.latest_run(mailing.id)) == trial
    assert (await store.start_run(plain.id)).spec == RunSpec()


async def test_of_processes_that_saw_a_launch_due_exactly_one_takes_it(store: Store) -> None:
    w = await make_world(store, 1)
    m = await store.create_mailing(name="r", kind="regular", resource="news",
                                   source=w.source(), template="x", limit=None,
                                   next_launch=100.0)
    other = await store.create_mailing(name="later", kind="broadcast", resource="news",
                                       source=w.source(), template="x", limit=None,
                                       next_launch=500.0)
    assert [d.id for d in await store.due_mailings(99.0)] == []
    assert [d.id for d in await store.due_mailings(100.0)] == [m.id]
    assert await store.next_due() == 100.0
    # two processes both saw it due at 100: the first moves it on, the second finds it moved
    assert await store.set_launch(m.id, expect=100.0, next_launch=160.0)
    assert not await store.set_launch(m.id, expect=100.0, next_launch=160.0)
    assert (await store.get_mailing(m.id)).next_launch == 160.0
    assert [d.id for d in await store.due_mailings(400.0)] == [m.id]
    assert [d.id for d in await store.due_mailings(600.0)] == [m.id, other.id]
    # its last launch: nothing next, and done
    assert await store.set_launch(m.id, expect=160.0, next_launch=None, state="done")
    done = await store.get_mailing(m.id)
    assert (done.state, done.next_launch) == ("done", None)
    assert await store.next_due() == 500.0
    # a cancelled mailing is never launched again, whoever tries
    await store.set_mailing_state(other.id, "cancelled")
    cancelled = await store.get_mailing(other.id)
    assert (cancelled.state, cancelled.next_launch) == ("cancelled", None)
    assert not await store.set_launch(other.id, expect=None, next_launch=700.0)
    assert await store.due_mailings(10_000.0) == []
    assert await store.next_due() is None
    with pytest.raises(NotFound):
        await store.set_mailing_state(other.id + 100, "done")


async def test_a_launch_step_is_due_once_its_run_is_finished_and_its_time_has_come(
    store: Store,
) -> None:
    w = await make_world(store, 1)
    mailing = await store.create_mailing(name="m", kind="broadcast", resource="news",
                                         source=w.source(), template="x", limit=None)
    run = await store.start_run(mailing.id, RunSpec(phase="test", variant=0))
    spec = RunSpec(phase="test", variant=1, window=(1.0, 2.0), wave=2)
    after = await store.add_step(mailing.id, spec, after_run=run.id)
    timed = await store.add_step(mailing.id, RunSpec(), at=1000.0, kind="wave")
    free = await store.add_step(mailing.id, RunSpec(), kind="wait")
    assert [s.id for s in await store.pending_steps(999.0)] == [free]  # run still going
    await store.set_run_status(run.id, "finished")
    steps = await store.pending_steps(1000.0)
    assert [s.id for s in steps] == [after, timed, free]
    first = steps[0]
    assert (first.mailing_id, first.kind, first.spec, first.after_run, first.at) == (
        mailing.id, "run", spec, run.id, None)
    assert (steps[1].kind, steps[1].at, steps[2].kind) == ("wave", 1000.0, "wait")


async def test_a_launch_step_is_taken_exactly_once_and_a_cancel_drops_them_all(
    store: Store,
) -> None:
    w = await make_world(store, 1)
    mailing = await store.create_mailing(name="m", kind="broadcast", resource="news",
                                         source=w.source(), template="x", limit=None)
    other = await store.create_mailing(name="o", kind="broadcast", resource="news",
                                       source=w.source(), template="x", limit=None)
    step = await store.add_step(mailing.id, RunSpec())
    assert await store.take_step(step) is True
    assert await store.take_step(step) is False
    assert await store.pending_steps(0.0) == []
    await store.add_step(mailing.id, RunSpec())
    await store.add_step(mailing.id, RunSpec(), at=5.0)
    kept = await store.add_step(other.id, RunSpec())
    assert await store.drop_steps(mailing.id) == 2
    assert [s.id for s in await store.pending_steps(10.0)] == [kept]


async def test_a_run_and_its_next_step_start_together(store: Store) -> None:
    w = await make_world(store, 1)
    mailing = await store.create_mailing(name="m", kind="multivariate", resource="news",
                                         source=w.source(), template="x", limit=None)
    then = RunSpec(phase="test", variant=1)
    run, step_id = await store.start_run_then(mailing.id, RunSpec(phase="test"), "run", then)
    assert (run.mailing_id, run.status, run.spec) == (mailing.id, "running",
                                                      RunSpec(phase="test"))
    assert await store.pending_steps(time.time()) == []
    await store.set_run_status(run.id, "finished")
    [step] = await store.pending_steps(time.time())
    assert (step.id, step.kind, step.spec, step.after_run, step.at) == (
        step_id, "run", then, run.id, None)
