"""A refused or failed token request is asked once per run, however many endpoint tasks want
it: its outcome is shared by every item of that user."""

from __future__ import annotations

import asyncio

from sync_pipeline.upstream.errors import RequestFailed, UserNeedsReconnect
from sync_pipeline.upstream.models import UserRef
from sync_pipeline.upstream.tokens import IssuedToken, TokenCache

USER = UserRef("refused", "f" * 32)


def test_refusal_is_remembered_for_every_waiter() -> None:
    calls = 0

    async def refuse(user: UserRef) -> IssuedToken:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise UserNeedsReconnect(
            client_user_id=user.client_user_id, human_id=user.human_id, status=403
        )

    async def main() -> list[BaseException | str]:
        cache = TokenCache(refuse)
        return await asyncio.gather(*(cache.get(USER) for _ in range(10)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert calls == 1
    assert all(isinstance(o, UserNeedsReconnect) and o.status == 403 for o in outcomes)


def test_a_token_request_that_failed_for_good_is_shared_not_retried_per_endpoint() -> None:
    calls = 0

    async def unreachable(user: UserRef) -> IssuedToken:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RequestFailed(
            path="/v1/connect/token", status=None, request_id="r1",
            reason="gave up after 6 attempts: ConnectError",
        )  # fmt: skip

    async def main() -> list[BaseException | str]:
        cache = TokenCache(unreachable)
        first = await asyncio.gather(*(cache.get(USER) for _ in range(5)), return_exceptions=True)
        later = await asyncio.gather(*(cache.get(USER) for _ in range(5)), return_exceptions=True)
        return [*first, *later]

    outcomes = asyncio.run(main())
    assert calls == 1  # one token request's retries, not one per endpoint
    assert all(isinstance(o, RequestFailed) and o.request_id == "r1" for o in outcomes)


def test_a_granted_token_is_not_affected() -> None:
    async def grant(user: UserRef) -> IssuedToken:
        return IssuedToken("tok", 3600)

    assert asyncio.run(TokenCache(grant).get(USER)) == "tok"
