"""The error types for expected failures, and the one place failures become a line of text.

Services raise :class:`NcfError` for anything a user can fix (bad input, a missing artifact, a
missing credential), worded in the library's terms: a setting is named by its config key
(``model.layers``) or by the argument that carries it, in backticks (```resume```), never by a CLI
flag. The error's ``settings`` lists the names its message and hint use, so a front end can show
them in its own terms (the CLI maps them to flags in :mod:`ncfctl.cli.errors`). Subclasses name
the failures a library caller may want to handle apart: a missing input artifact, an artifact
that cannot be trusted, a missing optional extra, AWS refusing or unreachable; the CLI treats
them all alike (one line, exit code 2).

:func:`expected_failure` also recognises the failures that come from the environment rather than
from ncfctl (an unreachable or refusing AWS endpoint, an OS error on a path), so no command has to
wrap every boto3 call. The CLI prints :func:`one_line` of it and exits with code 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

MAX_LINE_CHARS = 600  # a bad value can be megabytes long: show its head and tail, never all of it


class NcfError(Exception):
    """An expected failure with a one-line message that names the file/field/value at fault.

    ``settings``: the config keys (``train.lr``) and service arguments (``pretrain_gmf``, written
    in backticks in the text) that the message or hint names.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, settings: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.settings = settings

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ArtifactNotFoundError(NcfError):
    """An input artifact is not in the workspace: none of the kind asked for, or no such id.

    A library caller can catch it to create the missing input (``Workspace.resolve`` raises it).
    """


class ArtifactCorruptError(NcfError):
    """An artifact cannot be trusted: its manifest is unreadable or its files differ from it."""


class MissingExtraError(NcfError):
    """An optional dependency (an ``ncfctl[...]`` extra) that this operation needs is not installed."""


class AwsError(NcfError):
    """AWS could not be reached or refused a request (from botocore's exceptions)."""


def one_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), its middle cut when longer than ``limit``.

    The head keeps what failed and the tail keeps the hint; a value in between is what gets cut.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]} ...[{len(text) - head - tail:,} characters cut]... {text[-tail:]}"


def _aws_failure(exc: BaseException) -> NcfError | None:
    """botocore's exceptions as one line (botocore is only inspected when it is already imported)."""
    boto = sys.modules.get("botocore.exceptions")
    if boto is None:
        return None
    if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
        return AwsError(f"AWS is unreachable: {exc}", hint="check aws.endpoint_url, aws.region and the network")
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "request")
        return AwsError(f"AWS {operation} failed: {error.get('Code', 'Error')}: {error.get('Message', exc)}")
    if isinstance(exc, boto.BotoCoreError):
        return AwsError(f"AWS: {exc}")
    return None


def expected_failure(exc: BaseException) -> NcfError | None:
    """``exc`` as an :class:`NcfError` when a user can act on it; ``None`` for a bug (keep the traceback)."""
    if isinstance(exc, NcfError):
        return exc
    aws = _aws_failure(exc)
    if aws is not None:
        return aws
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f"{exc.filename}: " if exc.filename else ""
        return NcfError(f"{where}{exc.strerror or exc}")
    return None
