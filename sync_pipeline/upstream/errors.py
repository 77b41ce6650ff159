"""Errors raised by the upstream client.

Hierarchy::

    UpstreamError                  base of everything below; catch this to catch them all
    ├── ClientCredentialsRejected  401 from the token endpoint: our client id/secret are wrong,
    │                              so every user will fail the same way; fatal for the run
    ├── UpstreamUnreachable        the probe before a run got no usable answer from the auth
    │                              service (refused connection, timeouts, 5xx): fatal for the run
    ├── UserNeedsReconnect         403/404 from the token endpoint: this one user has no connected
    │                              source or was deleted; record it and keep syncing the others
    └── RequestFailed              a request did not succeed: a non-retryable status (400, a
                                   second 401, ...), retries exhausted on 429/5xx/transport
                                   errors, the per-request deadline passed, or a body that is
                                   not the JSON shape the contract promises

Messages carry the method-free path (never the query string, which may hold filters
we do not want in logs), the status and our X-Request-Id, and never a token or secret.
"""

from __future__ import annotations

import re


class UpstreamError(Exception):
    """Base class for every error the upstream client raises."""


class ClientCredentialsRejected(UpstreamError):
    """The auth service rejected our client id/secret (401): no user can sync this run."""

    def __init__(self) -> None:
        super().__init__("the auth service rejected the client credentials (401)")


class UpstreamUnreachable(UpstreamError):
    """The upstream gave no usable answer to the probe: nothing in this run can succeed."""

    def __init__(self, *, service: str, base_url: str, reason: str) -> None:
        self.service = service
        self.base_url = base_url
        self.reason = reason
        super().__init__(
            f"the upstream's {service} at {base_url} is unreachable ({reason}): check that it "
            "is running and that SYNC_AUTH_URL / SYNC_API_URL point at it"
        )


class UserNeedsReconnect(UpstreamError):
    """The auth service will not issue a token for this user (403/404)."""

    def __init__(self, *, client_user_id: str, human_id: str | None, status: int) -> None:
        self.client_user_id = client_user_id
        self.human_id = human_id
        self.status = status
        super().__init__(
            f"user {client_user_id!r} (human {human_id}) needs to reconnect: "
            f"token endpoint answered {status}"
        )


class RequestFailed(UpstreamError):
    """A request to the upstream failed for good (after any retries it was allowed)."""

    def __init__(self, *, path: str, status: int | None, request_id: str, reason: str) -> None:
        self.path = path
        self.status = status
        self.request_id = request_id
        self.reason = reason
        shown_status = "no response" if status is None else f"status {status}"
        super().__init__(f"{path}: {reason} ({shown_status}, request id {request_id})")


# the failure reason of every item of a user whose token was refused (403/404): not a fault of
# the run, the user must reconnect (summaries count these items as skipped)
NEEDS_RECONNECT = "user needs to reconnect"

_REQUEST_FAILED = re.compile(
    r"^\S+: (?P<reason>.*) \((?:status \d+|no response), request id [^)]*\)$", re.DOTALL
)


def failure_kind(message: str) -> str:
    """A failure message without the path and request id a RequestFailed names, so failures of
    many items group by what went wrong (the full message stays in ops.sync_failures)."""
    matched = _REQUEST_FAILED.match(message)
    return matched["reason"] if matched else message
