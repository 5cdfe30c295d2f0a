"""What both ext_authz protocols share: a chain's request phases run once per check, the
decision counted and logged.

``AuthzEngine`` owns the per-chain plans, the chain selection (unknown names answer 500), the
generator that runs the phases (driven by ``drive_sync``/``drive_async`` by the caller) and the
bookkeeping of a decision (metrics, decision log). The gRPC servicer (``_service``) and the HTTP
server (``_http``) only translate requests in and decisions out.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping
from typing import Any

from .._chain import Chain, Stream, header_changes
from .._headers import Headers
from .._messages import Response
from .._phases import BodyMode
from ..runtime import ChainRouter, SidecarMetrics
from ._decisions import DecisionLog
from ._metrics import AuthzMetrics

__all__ = ["AuthzEngine"]

log = logging.getLogger("envoykit.extauthz")

_MAX_LOGGED_UNKNOWN = 64


class _Plan:
    """What one chain needs from a Check, computed once."""

    __slots__ = ("chain", "is_async", "name", "runs_body", "runs_response")

    def __init__(self, chain: Chain) -> None:
        needs = chain.needs
        self.chain = chain
        self.name = chain.name
        self.is_async = bool(chain.async_hooks)
        self.runs_body = needs.request_body is not BodyMode.NONE
        self.runs_response = needs.response_headers
        skipped = [
            phase
            for phase, used in (
                ("request trailers", needs.request_trailers),
                ("response body", needs.response_body is not BodyMode.NONE),
                ("response trailers", needs.response_trailers),
            )
            if used
        ]
        if skipped:
            log.warning(
                "chain %r runs under ext_authz, which has no %s: those hooks never run there "
                "(put such filters in an ext_proc chain)",
                chain.name,
                ", ".join(skipped),
            )


class _Outcome:
    __slots__ = ("changes", "reply", "response_changes")

    def __init__(self) -> None:
        self.reply: Response | None = None
        self.changes: list[tuple[str, list[str]]] = []
        self.response_changes: list[tuple[str, list[str]]] = []


class AuthzEngine:
    """Chains, metrics and decision log of an ext_authz server (either protocol)."""

    def __init__(
        self, router: ChainRouter, metrics: SidecarMetrics, *, decision_log: DecisionLog | None = None
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.authz_metrics = AuthzMetrics.shared(metrics.registry)
        self.decision_log = decision_log
        self.plans = {name: _Plan(chain) for name, chain in router.chains.items()}
        self._logged_unknown: set[str | None] = set()
        self._logged_body_drop: set[str] = set()

    def select_plan(self, named: str | None, raw: Any, headers: Headers) -> _Plan | None:
        """The plan of the chain this check runs; ``None`` (counted, logged once) when unknown."""
        name, chain = self.router.select(named, raw, headers)
        if chain is not None and name is not None:
            return self.plans[name]
        self.metrics.stream_error("unknown_chain")
        if name not in self._logged_unknown and len(self._logged_unknown) < _MAX_LOGGED_UNKNOWN:
            self._logged_unknown.add(name)
            log.error(
                "no chain %r (known: %s); answering 500. Check the gateway's authz chain",
                name,
                ", ".join(sorted(self.plans)),
            )
        return None

    def run(
        self, plan: _Plan, stream: Stream, headers: Headers, body: bytes
    ) -> Generator[Any, Any, _Outcome]:
        """The chain's request phases (and its response-headers hooks on an empty response)."""
        outcome = _Outcome()
        reply = yield from stream.request_headers(headers, end_of_stream=not plan.runs_body)
        if reply is None and plan.runs_body:
            reply = yield from stream.request_body(body, True)
            request = stream.request
            if reply is None and request is not None and request.body_changed:
                self._body_dropped(plan.name)
        if reply is not None:
            outcome.reply = reply
            return outcome
        outcome.changes = header_changes(headers)
        if plan.runs_response:
            response_headers = Headers()
            reply = yield from stream.response_headers(response_headers, end_of_stream=False)
            if reply is not None:
                outcome.reply = reply
                return outcome
            outcome.response_changes = header_changes(response_headers)
        return outcome

    def decided(
        self,
        plan: _Plan,
        stream: Stream,
        headers: Headers,
        outcome: _Outcome,
        metadata: Mapping[str, Mapping[str, Any]],
    ) -> int:
        """Count and log the decision; returns its HTTP status (200 for allow)."""
        reply = outcome.reply
        if reply is not None:
            status = reply.status or 403
            self.metrics.local_reply(plan.name, status)
            self.authz_metrics.decided(plan.name, "deny", stream.replied_by or "")
            details = reply.reply.details if reply.reply is not None else ""
            decision = "deny"
        else:
            self.authz_metrics.decided(plan.name, "allow", "")
            status = 200
            details = ""
            decision = "allow"
        if self.decision_log is not None:
            self.decision_log.record(
                chain=plan.name,
                decision=decision,
                status=status,
                filter_name=stream.replied_by,
                details=details,
                headers=headers,
                client_ip=stream.attributes.source_address,
                request_id=headers.get("x-request-id") or stream.attributes.request_id,
                metadata=metadata,
            )
        return status

    def _body_dropped(self, chain: str) -> None:
        if chain not in self._logged_body_drop:
            self._logged_body_drop.add(chain)
            log.warning(
                "chain %r changed the request body under ext_authz, which cannot send a body "
                "back: the change is dropped (use an ext_proc chain to rewrite bodies)",
                chain,
            )
