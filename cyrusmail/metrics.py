"""Prometheus metrics of one server process, and the loopback HTTP endpoint that serves them.

Every figure lives in one :class:`Metrics` per server (``context.metrics``),
with its own ``prometheus_client`` registry: nothing is global, so two
servers in one process (as in the tests) never mix their counts.  What
changes with each event is counted where it happens (a login, a command,
a delivery); what is a state (connections open now, the queue, quota use)
is read when Prometheus asks, by :class:`StateCollector`.

Label sets are bounded: services and protocols come from the config's
sections, mechanisms from :data:`cyrusmail.sasl.MECHANISMS` plus ``USER``
and ``LOGIN``, command names from each protocol's one command table
(anything else is ``other``).  Users never appear as labels, except those
an administrator names in ``[metrics] quota_users``.

With several processes serving one data folder, each keeps its own
figures; :func:`merge_expositions` joins their text expositions (counters
and histograms summed, the gauges of :data:`SHARED_GAUGES`, which every
process reads from the same place, taken once) and :class:`MetricsResource`
serves whatever its ``source`` gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.web import resource, server

from cyrusmail import logs

disable_created_metrics()  # the ``_created`` series would double the output and tell nothing here

#: Service section -> protocol label.
PROTOCOLS = {"imap": "imap", "imaps": "imap", "pop3": "pop3", "pop3s": "pop3",
             "submission": "submission", "submissions": "submission", "lmtp": "lmtp"}
#: Seconds: from a NOOP (well under a millisecond) to a SEARCH over a big mailbox.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Mechanisms a login may name; anything else is counted as ``other``.
MECHANISMS = frozenset({"LOGIN", "USER", "PLAIN"})
#: Gauges every process reads from the same shared place (the spool, the indexes): merged by taking the highest.
SHARED_GAUGES = frozenset({
    "cyrusmail_queue_messages", "cyrusmail_queue_oldest_age_seconds", "cyrusmail_quota_storage_used_kib",
    "cyrusmail_quota_storage_limit_kib",
})


class Metrics:
    """The figures of one server (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.logins = Counter("cyrusmail_logins", "Password checks by service, mechanism and result (ok, failed).",
                              ["service", "mechanism", "result"], registry=registry)
        self.commands = Histogram("cyrusmail_command_duration_seconds",
                                  "Time from a command's arrival to its reply, by protocol and command.",
                                  ["protocol", "command"], buckets=LATENCY_BUCKETS, registry=registry)
        self.deliveries = Counter("cyrusmail_deliveries",
                                  "Messages handed on by submission and LMTP, per recipient: delivered (local), "
                                  "queued (remote, or local to retry), refused.",
                                  ["service", "result"], registry=registry)
        self.internal_errors = Counter("cyrusmail_internal_errors",
                                       "Commands or deliveries that failed unexpectedly (store or code errors).",
                                       ["protocol"], registry=registry)
        self.state = StateCollector()
        registry.register(self.state)

    # -- events -------------------------------------------------------------------

    def login(self, service: str, mechanism: str, ok: bool) -> None:
        mechanism = mechanism.upper() if mechanism.upper() in MECHANISMS else "other"
        self.logins.labels(service, mechanism, "ok" if ok else "failed").inc()

    def command(self, service: str, command: str, seconds: float) -> None:
        """One command answered; ``command`` must come from the protocol's table (or be ``other``)."""
        self.commands.labels(PROTOCOLS.get(service, service), command).observe(max(0.0, seconds))
        if logs.debugging():
            logs.log.debug("{service}: {command} answered in {ms:.1f} ms", service=service, command=command,
                           ms=seconds * 1000)

    def delivered(self, service: str, result: str, count: int = 1) -> None:
        if count:
            self.deliveries.labels(service, result).inc(count)

    def internal_error(self, service: str) -> None:
        self.internal_errors.labels(PROTOCOLS.get(service, service)).inc()

    # -- reading ---------------------------------------------------------------------

    def exposition(self) -> str:
        """The Prometheus text format of every figure, now."""
        return generate_latest(self.registry).decode("utf-8")


class StateCollector:
    """Figures read when Prometheus asks: connections, the queue, chosen users' quota.

    Its sources are set once the server's parts exist (:meth:`watch`); each
    one it lacks is left out.
    """

    def __init__(self) -> None:
        self.sessions: Callable[[], Any] | None = None  # the SessionRegistry now (a worker puts in its own)
        self.queue: Callable[[], Any] | None = None  # the outbound queue, if this process has one
        self.quota_users: Callable[[], Iterable[tuple[str, int, int]]] | None = None

    def watch(self, sessions=None, queue=None, quota_users=None) -> None:
        if sessions is not None:
            self.sessions = sessions
        if queue is not None:
            self.queue = queue
        if quota_users is not None:
            self.quota_users = quota_users

    def describe(self):
        return []  # figures depend on what is watched: registered without a fixed description

    def collect(self):
        yield from self._connections()
        yield from self._queue()
        yield from self._quota()

    def _connections(self):
        sessions = self.sessions() if self.sessions is not None else None
        if sessions is None:
            return
        current = GaugeMetricFamily("cyrusmail_connections", "Connections open now, by service.",
                                    labels=["service"])
        logged_in = GaugeMetricFamily("cyrusmail_sessions_logged_in", "Sessions logged in now, by service.",
                                      labels=["service"])
        opened = CounterMetricFamily("cyrusmail_connections_accepted", "Connections accepted since the start.",
                                     labels=["service"])
        refused = CounterMetricFamily("cyrusmail_connections_refused",
                                      "Connections refused at a cap (or while stopping) since the start.",
                                      labels=["service"])
        live: dict[str, list[int]] = {}
        for entry in sessions.live():
            counts = live.setdefault(entry.service, [0, 0])
            counts[0] += 1
            counts[1] += entry.user is not None
        for service in sorted(set(live) | set(sessions.accepted) | set(sessions.refused)):
            now, users = live.get(service, (0, 0))
            current.add_metric([service], now)
            logged_in.add_metric([service], users)
            opened.add_metric([service], sessions.accepted[service])
            refused.add_metric([service], sessions.refused[service])
        yield from (current, logged_in, opened, refused)

    def _queue(self):
        queue = self.queue() if self.queue is not None else None
        if queue is None:
            return
        entries = queue.listing()
        oldest = min((entry.arrival for entry in entries), default=None)
        yield GaugeMetricFamily("cyrusmail_queue_messages", "Messages in the outbound queue.", value=len(entries))
        yield GaugeMetricFamily("cyrusmail_queue_oldest_age_seconds",
                                "Age of the oldest message in the outbound queue (0 when empty).",
                                value=0 if oldest is None else max(0.0, time.time() - oldest))

    def _quota(self):
        if self.quota_users is None:
            return
        used = GaugeMetricFamily("cyrusmail_quota_storage_used_kib",
                                 "STORAGE used (KiB) by each user named in [metrics] quota_users.",
                                 labels=["user"])
        limit = GaugeMetricFamily("cyrusmail_quota_storage_limit_kib",
                                  "STORAGE limit (KiB) of each user named in [metrics] quota_users (absent: none).",
                                  labels=["user"])
        for user, usage, cap in self.quota_users():
            used.add_metric([user], usage)
            if cap is not None:
                limit.add_metric([user], cap)
        yield used
        yield limit


def merge_expositions(texts: Iterable[str]) -> str:
    """One exposition from several processes' (see the module docstring)."""
    families: dict[str, tuple[str, str, dict[tuple, float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            kind = family.type
            _, _, samples = families.setdefault(family.name, (kind, family.documentation, {}))
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if kind == "gauge" and family.name in SHARED_GAUGES:
                    samples[key] = max(samples.get(key, sample.value), sample.value)
                else:
                    samples[key] = samples.get(key, 0.0) + sample.value
    lines = []
    for name, (kind, documentation, samples) in families.items():
        shown_name = f"{name}_total" if kind == "counter" else name  # as generate_latest writes it
        lines.append(f"# HELP {shown_name} {_escape_help(documentation)}")
        lines.append(f"# TYPE {shown_name} {kind}")
        for (sample_name, labels), value in samples.items():
            shown = ",".join(f'{key}="{_escape_label(str(label))}"' for key, label in labels)
            lines.append(f"{sample_name}{{{shown}}} {_number(value)}" if labels else f"{sample_name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class MetricsResource(resource.Resource):
    """``GET /metrics``: the exposition ``source()`` gives (a string, or a Deferred of one)."""

    isLeaf = True

    def __init__(self, source: Callable[[], str | defer.Deferred]) -> None:
        super().__init__()
        self.source = source

    def render_GET(self, request):
        if request.path != b"/metrics":
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"Not found: metrics are at /metrics\n"
        answer = defer.maybeDeferred(self.source)

        def send(text: str) -> None:
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            request.write(text.encode("utf-8"))
            request.finish()

        def failed(failure) -> None:
            if failure.check(defer.CancelledError):
                return  # the client went away
            logs.log.failure("metrics: the figures could not be gathered", failure)
            request.setResponseCode(500)
            request.write(b"The figures could not be gathered; see the server's log.\n")
            request.finish()

        answer.addCallbacks(send, failed)
        request.notifyFinish().addErrback(lambda _: answer.cancel())
        return server.NOT_DONE_YET


def site(source: Callable[[], str | defer.Deferred]) -> server.Site:
    """The HTTP factory of the metrics endpoint (no access log: Prometheus asks every few seconds)."""
    factory = server.Site(MetricsResource(source))
    factory.noisy = False
    factory.log = lambda request: None
    return factory
