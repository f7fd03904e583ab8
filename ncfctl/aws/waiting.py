"""Waiting for AWS work to end: one polling helper, and boto3's waiter definitions where AWS has them.

A wait here does more than boto3's ``Waiter.wait()`` can: between two ``Describe`` calls it shows
the job's status and its CloudWatch log lines, and Neo waits on several jobs at once. So every wait
is :func:`poll` around the caller's own check. Where boto3 ships a waiter for the resource (SageMaker
training and transform jobs), :func:`waiter_ended` takes the end states from that waiter's
acceptors instead of a list kept here; CodeBuild builds and Neo compilation jobs have no waiter, so
their callers name their terminal states themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from ncfctl.aws.clients import client
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

T = TypeVar("T")


def poll(
    check: Callable[[], T | None],
    every: float,
    timeout_s: float | None = None,
    on_timeout: Callable[[], NcfError] | None = None,
) -> T:
    """Call ``check`` every ``every`` seconds until it returns something other than ``None``.

    Without ``timeout_s`` the wait ends when the service ends the work (every job and build here
    has its own stopping condition); with it, ``on_timeout()`` is raised once that much time passed.
    """
    started = time.monotonic()
    while True:
        result = check()
        if result is not None:
            return result
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise on_timeout() if on_timeout else NcfError(f"still not finished after {timeout_s:.0f} s")
        time.sleep(every)


def waiter_ended(aws: AwsConfig, service: str, waiter_name: str) -> Callable[[dict], bool]:
    """Whether a ``Describe`` response is in a state where boto3's ``waiter_name`` stops waiting.

    Both its success and failure states count as ended (the caller reads the status to tell which);
    error matchers (e.g. ``ValidationException``) do not apply to a response that was returned.
    """
    acceptors = client(aws, service).get_waiter(waiter_name).config.acceptors
    final = [a for a in acceptors if a.state in ("success", "failure") and a.matcher != "error"]
    return lambda described: any(a.matcher_func(described) for a in final)
