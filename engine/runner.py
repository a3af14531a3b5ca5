"""Herald as a library: open a workspace, send a broadcast, resume a run, read its log.

::

    async with await Herald.open("herald.toml") as herald:
        log = await herald.send(resource="news", database="main", template="Hi {lead._fname}")
        print(format_log(log))

The CLI is a thin layer over this class.
"""

from __future__ import annotations

import contextlib
import marshal
import signal
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread
import msgspec

from engine.audience import resolve_audience
from engine.config import Config, load_config
from engine.core.phones import PhoneNormaliser
from engine.core.policy import Policy
from engine.core.sms import measure
from engine.core.templates import (
    PythonCompiler,
    TemplateLimits,
    compile_marshalled,
    compile_template,
    refuse_blank,
)
from engine.drivers import Driver, Inbound, Receipt, check_callback_size
from engine.errors import GatewayError, InputError
from engine.limits import SenderLimits
from engine.mailing_log import MailingLog, build_log
from engine.pipeline import Limits, Pipeline, PipelineStats, run_template
from engine.plugins import Plugins, load_plugins
from engine.store.base import ReceiptReport, Store
from engine.store.models import AudienceSource, Mailing, MailingOptions, Run, run_is_live
from engine.store.open import open_store
from engine.tracking.inbound import InboundTaker

__all__ = ["Herald"]

Progress = Callable[[PipelineStats], None]

#: Templates compiled at once in worker threads by :meth:`Herald.compile_async`, per event
#: loop: a client posting big templates takes these, not every worker thread.
COMPILE_THREADS = 2
# A limiter belongs to one event loop (asyncio or trio), so there is one per running loop.
_compile_limiters: weakref.WeakKeyDictionary[Any, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


#: Generated Python source longer than this is compiled in a worker process (about 20 ms
#: of compile() holding the GIL, which would stall the event loop's thread).
COMPILE_IN_PROCESS = 64_000


def _compile_off_the_gil(source: str, filename: str) -> CodeType:
    """A template's ``compiler`` in a worker thread of :meth:`Herald.compile_async`."""
    if len(source) <= COMPILE_IN_PROCESS:
        return compile(source, filename, "exec")
    data = anyio.from_thread.run(anyio.to_process.run_sync, compile_marshalled, source, filename)
    code: CodeType = marshal.loads(data)
    return code


def _compile_limiter() -> anyio.CapacityLimiter:
    loop = anyio.lowlevel.current_token().native_token
    limiter = _compile_limiters.get(loop)
    if limiter is None:
        limiter = _compile_limiters[loop] = anyio.CapacityLimiter(COMPILE_THREADS)
    return limiter


class Herald:
    """One workspace: a config, its plugins and its store."""

    def __init__(self, config: Config, plugins: Plugins, store: Store) -> None:
        self.config = config
        self.plugins = plugins
        self.store = store
        #: The pipeline of the run in progress, if any (for progress and stop()).
        self.pipeline: Pipeline | None = None
        self._receipt_parsers: dict[str, Driver] = {}
        self._inbound: InboundTaker | None = None
        #: Each sender's pace and window, shared by every run of this workspace; on a
        #: cluster with ``[cluster] redis``, shared by every process through Redis.
        self.limits: Limits = SenderLimits()

    @classmethod
    async def open(
        cls, config: str | Path | Config | None = None, *, plugins: Plugins | None = None
    ) -> Herald:
        plugins = plugins or load_plugins()
        if not isinstance(config, Config):
            config = load_config(config, drivers=plugins.drivers)
        store = await open_store(config.database_url)
        herald = cls(config, plugins, store)
        if config.cluster is not None and config.cluster.redis is not None:
            from engine.cluster.limits import RedisSenderLimits

            limits = RedisSenderLimits(config.cluster.redis)
            try:
                await limits.__aenter__()  # its client, for this event loop
            except BaseException:
                await store.aclose()
                raise
            herald.limits = limits
        return herald

    async def __aenter__(self) -> Herald:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            close = getattr(self.limits, "close", None)  # Redis's connections, if any
            if close is not None:
                await close()
        finally:
            await self.store.aclose()

    # -- sending -----------------------------------------------------------------------

    async def send(
        self,
        *,
        resource: str,
        template: str,
        database: str | None = None,
        segment: str | None = None,
        limit: int | None = None,
        name: str | None = None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
        progress: Progress | None = None,
        handle_signals: bool = False,
        subject: str | None = None,
        text: str | None = None,
    ) -> MailingLog:
        """Run a broadcast mailing now, to its end; return its mailing log. ``policy``
        overrides the resource's and the account's sending policy for this mailing. An
        email resource's mailing has a ``subject``, ``template`` is its HTML and ``text``
        its text version (None: made from the HTML)."""
        begun = time.perf_counter()
        mailing, run, compiled = await self.create_broadcast(
            resource=resource, template=template, database=database, segment=segment,
            limit=limit, name=name, document=document, policy=policy, subject=subject,
            text=text,
        )
        return await self.execute(mailing, run, template=compiled, progress=progress,
                                  handle_signals=handle_signals, begun=begun)

    async def create_broadcast(
        self,
        *,
        resource: str,
        template: str,
        database: str | None = None,
        segment: str | None = None,
        limit: int | None = None,
        name: str | None = None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
        subject: str | None = None,
        text: str | None = None,
    ) -> tuple[Mailing, Run, Any]:
        """A broadcast mailing and its run, running, nothing sent yet; with the compiled
        template. (``send``'s first half; a cluster's ``herald send`` cuts the run into
        chunks for the workers then.)"""
        if limit is not None and limit < 0:
            raise InputError("--limit must be 0 or more")
        compiled = self.compile_for(resource, template, subject=subject, text=text)
        source = await resolve_audience(
            self.store, self.config, resource, database=database, segment=segment,
            keys=("--database", "--segment"),
        )
        mailing, run = await self.store.create_run(
            name=name or f"{resource} {time.strftime('%Y-%m-%d %H:%M')}",
            resource=resource,
            source=source,
            template=template,
            limit=limit,
            document=document,
            policy=policy,
            options=MailingOptions(subject=subject, text=text),
        )
        # launched now, once: no start, schedule or console may launch it again
        await self.store.set_mailing_state(mailing.id, "done")
        return msgspec.structs.replace(mailing, state="done"), run, compiled

    async def resume(
        self, run_id: int, *, progress: Progress | None = None, handle_signals: bool = False
    ) -> MailingLog:
        """Finish an interrupted run: nobody lost, nobody sent twice."""
        mailing, stored = await self.store.get_run(run_id)
        if mailing.kind == "trigger":  # its queue never ends: this would never return
            raise InputError(
                f"run {run_id} belongs to trigger mailing {mailing.id} ({mailing.name!r});"
                " trigger runs are resumed by `herald serve` (MailingService), which takes"
                " up their queued calls when it starts"
            )
        if mailing.resource not in self.config.resources:
            raise InputError(f"run {run_id}'s resource {mailing.resource!r} left the config")
        compiled = self.compile_run(mailing, stored)  # the variant it was for
        run = await self.store.claim_run(run_id)
        return await self.execute(mailing, run, template=compiled, resume=True,
                                  progress=progress, handle_signals=handle_signals)

    def compile(self, template: str) -> Any:
        """Compile a template with the plugins' functions, within ``[limits]``; TemplateError
        if it is wrong or too big. CPU work: on an event loop, use :meth:`compile_async`."""
        return self._compile(template)

    async def compile_async(self, template: str) -> Any:
        """:meth:`compile` in a worker thread, so the event loop goes on meanwhile; at most
        :data:`COMPILE_THREADS` templates compile at once per event loop. The Python code of
        a big template is compiled in a worker process: CPython's compiler holds the GIL."""
        return await anyio.to_thread.run_sync(
            self._compile, template, _compile_off_the_gil, limiter=_compile_limiter()
        )

    def compile_for(
        self, resource: str, template: str, *, subject: str | None = None,
        text: str | None = None, compiler: PythonCompiler | None = None,
    ) -> Any:
        """A mailing's template compiled for its resource's channel: an SMS text (refused
        when blank: nobody gets a blank SMS), or an email resource's subject, HTML
        (``template``) and text version (``engine.core.email_message``). TemplateError
        names the part at fault; InputError a subject on SMS or none on email."""
        res = self.config.resources.get(resource)
        if res is None or res.channel != "email":
            if subject is not None or text is not None:
                raise InputError(f"{'subject' if subject is not None else 'text'}: resource"
                                 f" {resource!r} sends SMS; only an email resource's mailings"
                                 " have a subject and a text version")
            return refuse_blank(self._compile(template, compiler))
        if subject is None:
            raise InputError(f"subject: resource {resource!r} sends email: its mailings need"
                             " a subject (--subject)")
        from engine.core.email_message import compile_email

        tracked = self.config.tracking_base(resource) is not None
        return compile_email(
            lambda source, name, escape: self._compile(source, compiler, escape_html=escape),
            subject=subject,
            html=template, text=text, inline=res.inline_css,
            pixel=tracked and res.track_opens,
            unsubscribe=tracked and (res.list_unsubscribe or res.track_opens),
        )

    def compile_run(self, mailing: Mailing, run: Run, *,
                    compiler: PythonCompiler | None = None) -> Any:
        """The template run ``run`` of ``mailing`` sends, compiled (``run_template``: its
        variant's of a multivariate mailing; an email mailing's three parts)."""
        return self.compile_for(mailing.resource, run_template(mailing, run),
                                subject=mailing.options.subject, text=mailing.options.text,
                                compiler=compiler)

    async def compile_run_async(self, mailing: Mailing, run: Run) -> Any:
        """:meth:`compile_run` in a worker thread (see :meth:`compile_async`)."""
        return await anyio.to_thread.run_sync(
            lambda: self.compile_run(mailing, run, compiler=_compile_off_the_gil),
            limiter=_compile_limiter())

    def _compile(self, template: str, compiler: PythonCompiler | None = None, *,
                 escape_html: bool = False) -> Any:
        return compile_template(
            template,
            functions=self.plugins.template_functions(),
            limits=TemplateLimits.of(self.config.limits),
            compiler=compiler,
            escape_html=escape_html,
        )

    def drivers(self) -> dict[str, Driver]:
        """A fresh driver of each gateway a sender uses (its owner closes them)."""
        return self._drivers()

    def _drivers(self) -> dict[str, Driver]:
        used = {s.gateway for s in self.config.senders.values()}
        return {name: self.gateway_driver(name) for name in self.config.gateways
                if name in used}

    def gateway_driver(self, gateway: str) -> Driver:
        """A fresh driver of ``gateway`` (its owner closes it), with a listener that stores
        what arrives on its session."""
        gw = self.config.gateways[gateway]
        cls = self.plugins.drivers[gw.driver]
        driver = cls(gw.options, gateway=gateway, base_dir=self.config.base_dir)
        driver.listener = GatewayListener(self, gateway)
        return driver

    @property
    def inbound(self) -> InboundTaker:
        """Takes gateways' inbound messages (STOP replies) for this workspace."""
        if self._inbound is None:
            region = self.config.engine.default_region
            self._inbound = InboundTaker(self.config, self.plugins, self.store,
                                         PhoneNormaliser(region))
        return self._inbound

    async def execute(
        self,
        mailing: Mailing,
        run: Run,
        *,
        template: Any = None,
        resume: bool = False,
        progress: Progress | None = None,
        handle_signals: bool = False,
        started: Callable[[Pipeline], None] | None = None,
        begun: float | None = None,
    ) -> MailingLog:
        """Run (or, with ``resume``, finish) ``run`` of ``mailing`` until it ends or is
        stopped; ``started`` is handed the pipeline (for progress, stop() and wake()).
        ``template``: the run's template compiled (``run_template``: its variant's of a
        multivariate mailing); None: compiled here. ``begun``: when the caller started on
        the run (``time.perf_counter()``; default now), what the log's
        ``first_submit_ms`` counts from."""
        if begun is None:
            begun = time.perf_counter()
        store = self.store
        if template is None:
            template = self.compile_run(mailing, run)
        drivers = self._drivers()
        resource_id = await store.resource_id(mailing.resource)
        # the filter is sized by a bound got at once; the count, for progress, comes
        # beside the first messages (it scans an index: 80 ms for a million profiles)
        counted = mailing.kind != "trigger"
        total = await store.audience_bound(mailing.source) if counted else 0
        pipeline = Pipeline(
            store=store, config=self.config, drivers=drivers, mailing=mailing, run=run,
            template=template, measure=measure, resource_id=resource_id, total=total,
            limits=self.limits, functions=self.plugins.template_functions(),
        )
        try:
            await pipeline.ready()  # a wrong trial profile: an InputError, not a group of one
        except InputError as err:
            await store.set_run_status(run.id, "failed", error=f"InputError: {err}")
            raise
        self.pipeline = pipeline
        if started is not None:
            started(pipeline)
        t_start = time.perf_counter()
        status = "finished"
        error: str | None = None
        try:
            async with anyio.create_task_group() as tg:
                if handle_signals:
                    tg.start_soon(_stop_on_signal, pipeline)
                if counted:
                    tg.start_soon(_count_audience, pipeline, store, mailing.source)
                if progress is not None:
                    tg.start_soon(_report, pipeline, progress)
                for driver in drivers.values():
                    if type(driver).listens():  # receipts and keep-alives between batches
                        tg.start_soon(_listen_while_sending, driver)
                await pipeline.execute(resume=resume)
                tg.cancel_scope.cancel()
            if pipeline.stopped and not await pipeline.complete():
                status = "interrupted"
        except BaseException as err:
            status = "interrupted" if isinstance(err, anyio.get_cancelled_exc_class()) or \
                isinstance(err, KeyboardInterrupt) else "failed"
            error = None if status == "interrupted" else f"{type(err).__name__}: {err}"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                for driver in drivers.values():
                    await driver.aclose()
                timings = dict(run.timings)
                timings["total_time_s"] = round(
                    timings.get("total_time_s", 0.0) + time.perf_counter() - t_start, 3
                )
                if pipeline.cursor_ms is not None and "cursor_ms" not in timings:
                    timings["cursor_ms"] = round(pipeline.cursor_ms, 3)
                first = pipeline.dispatcher.first_submit
                if first is not None and "first_submit_ms" not in timings:
                    timings["first_submit_ms"] = round((first - begun) * 1000, 3)
                for stage, seconds in pipeline.busy.items():
                    key = f"busy_{stage}"
                    timings[key] = round(timings.get(key, 0.0) + seconds, 3)
                await store.set_run_status(run.id, status, timings=timings, error=error)  # type: ignore[arg-type]
                if self.pipeline is pipeline:
                    self.pipeline = None
            if progress is not None:
                progress(pipeline.statistics())
        return await self.log(run.id)

    # -- delivery receipts ---------------------------------------------------------------

    async def receipts(
        self, gateway: str, body: bytes, headers: dict[str, str] | None = None, *,
        max_receipts: int | None = None,
    ) -> ReceiptReport:
        """Take a delivery-receipt callback of ``gateway``: its driver parses it (in a
        worker thread), and each receipt moves its recipient, found by provider id among
        the messages of the gateway's own senders, to delivered or undelivered. A receipt
        for a message not recorded yet is kept for the gateway and applied when it is,
        unless it waits more than ``[engine] receipt_ttl`` seconds; a gateway keeps at
        most ``[limits] pending_receipts``, the oldest are dropped past that.
        ``max_receipts``: refuse a callback of more (InputError naming ``body``)."""
        gw = self.config.gateways.get(gateway)
        if gw is None:
            raise InputError(f"no gateway named {gateway!r} in the config")
        driver = self._receipt_parsers.get(gateway)
        if driver is None:
            cls = self.plugins.drivers[gw.driver]
            driver = cls(gw.options, gateway=gateway, base_dir=self.config.base_dir)
            if not driver.capabilities.supports_dlr:
                raise InputError(f"gateway {gateway!r} (driver {gw.driver}) has no receipts")
            self._receipt_parsers[gateway] = driver
        parser = driver
        both = driver.one_callback and driver.takes_inbound()

        def parse() -> tuple[list[Receipt], list[Inbound]]:
            # A driver's parser is sans-I/O and may be slow Python: off the loop, and so
            # is freeing what a callback over the bound parsed to.
            receipts = parser.parse_receipts(body, headers or {})
            check_callback_size(receipts, max_receipts, "receipts")
            inbound = parser.parse_inbound(body, headers or {}) if both else []
            check_callback_size(inbound, max_receipts, "inbound messages")
            return receipts, inbound

        receipts, inbound = await anyio.to_thread.run_sync(parse)
        if inbound:  # a gateway that posts replies to its receipt address (one_callback)
            await self.inbound.apply(gateway, inbound)
        return await self.apply_receipts(gateway, receipts)

    async def apply_receipts(self, gateway: str, receipts: Sequence[Receipt]) -> ReceiptReport:
        """Move the recipients of ``gateway``'s ``receipts`` (parsed already, or handed over
        by its driver's session) as :meth:`receipts` says."""
        senders = [name for name, s in self.config.senders.items() if s.gateway == gateway]
        return await self.store.apply_receipts(
            gateway, list(receipts), senders=senders, cap=self.config.limits.pending_receipts,
            ttl=self.config.engine.receipt_ttl,
        )

    # -- reading -----------------------------------------------------------------------

    async def log(self, run_id: int) -> MailingLog:
        mailing, run = await self.store.get_run(run_id)
        if run.status == "running" and not run_is_live(run):
            run = _with_status(run, "interrupted")
        return build_log(mailing, run, await self.store.run_summary(run_id))

    async def runs(self, limit: int = 100) -> list[tuple[Mailing, Run]]:
        out = []
        for mailing, run in await self.store.list_runs(limit):
            if run.status == "running" and not run_is_live(run):
                run = _with_status(run, "interrupted")
            out.append((mailing, run))
        return out


class GatewayListener:
    """What the engine gives each driver it makes (``Driver.listener``): receipts and
    inbound messages that arrive on the driver's own session (SMPP's ``deliver_sm``) are
    stored as those of an HTTP callback are, and only then does the call return."""

    __slots__ = ("_gateway", "_herald")

    def __init__(self, herald: Herald, gateway: str) -> None:
        self._herald = herald
        self._gateway = gateway

    async def receipts(self, receipts: Sequence[Receipt]) -> None:
        if receipts:
            await self._herald.apply_receipts(self._gateway, receipts)

    async def inbound(self, messages: Sequence[Inbound]) -> None:
        if messages:
            await self._herald.inbound.apply(self._gateway, messages)


def _with_status(run: Run, status: str) -> Run:
    return msgspec.structs.replace(run, status=status)


async def _listen_while_sending(driver: Driver) -> None:
    """A run's driver with a session of its own listens on it while the run goes on; a
    failure to is the sending's to report (``send_batch`` raises it), not a reason to stop."""
    with contextlib.suppress(GatewayError):
        await driver.listen()


async def _count_audience(pipeline: Pipeline, store: Store, source: AudienceSource) -> None:
    """Tell the pipeline how many profiles its audience holds (for progress)."""
    pipeline.set_total(await store.count_audience(source))


async def _stop_on_signal(pipeline: Pipeline) -> None:
    """First Ctrl-C/SIGTERM: stop gracefully. Second: stop waiting for the gateways."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            pipeline.stop(grace=0 if pipeline.stopped else None)


async def _report(pipeline: Pipeline, progress: Progress) -> None:
    while True:
        progress(pipeline.statistics())
        await anyio.sleep(0.2)
