"""Waiting on SageMaker jobs: status polling, CloudWatch log streaming, and Ctrl-C that stops the job.

A job keeps running (and billing) after the client that started it goes away, so an interrupted
wait must stop what it started: :func:`stop_on_interrupt` calls ``Stop<Kind>Job`` for every job
still running, then lets the ``KeyboardInterrupt`` end the command (exit 130). While waiting,
:class:`LogTail` follows the job's CloudWatch log streams (``/aws/sagemaker/<Kind>Jobs``, streams
named ``<job>/...``) so the user sees the container's own output; logs are a convenience, so a
missing log group (not created until the container starts) or a denied ``logs:`` call never fails
the wait (the latter is reported once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import botocore.exceptions

from ncfctl.aws.clients import client, error_message
from ncfctl.aws.waiting import poll, waiter_ended
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress


@dataclass(frozen=True)
class JobKind:
    """The API names of one kind of SageMaker job, and how to tell that one has ended."""

    noun: str  # "training job"
    api: str  # "TrainingJob": Describe<api>, Stop<api>, <api>Name, <api>Status
    log_group: str
    waiter: str | None = None  # boto3's waiter for this kind: its acceptors name the end states
    terminal: frozenset[str] = frozenset()  # the end states of a kind boto3 has no waiter for

    def describe(self, aws: AwsConfig, name: str) -> dict:
        method = getattr(client(aws, "sagemaker"), f"describe_{_snake(self.api)}")
        return method(**{f"{self.api}Name": name})

    def status(self, described: dict) -> str:
        return described[f"{self.api}Status"]

    def ended(self, aws: AwsConfig) -> Callable[[dict], bool]:
        """Whether a description is of a job that has ended (completed, failed or stopped)."""
        if self.waiter is not None:
            return waiter_ended(aws, "sagemaker", self.waiter)
        return lambda described: self.status(described) in self.terminal

    def stop(self, aws: AwsConfig, name: str) -> None:
        getattr(client(aws, "sagemaker"), f"stop_{_snake(self.api)}")(**{f"{self.api}Name": name})


def _snake(api: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in api).lstrip("_")


TRAINING = JobKind("training job", "TrainingJob", "/aws/sagemaker/TrainingJobs", "training_job_completed_or_stopped")
COMPILATION = JobKind(
    "compilation job",
    "CompilationJob",
    "/aws/sagemaker/CompilationJobs",
    terminal=frozenset({"COMPLETED", "FAILED", "STOPPED"}),
)
TRANSFORM = JobKind(
    "transform job", "TransformJob", "/aws/sagemaker/TransformJobs", "transform_job_completed_or_stopped"
)


class LogTail:
    """New CloudWatch log lines of the streams named ``<job>/...`` in ``group``, one poll at a time."""

    def __init__(self, aws: AwsConfig, group: str, job: str, on_line: Callable[[str], None]):
        self.aws, self.group, self.job, self.on_line = aws, group, job, on_line
        self.tokens: dict[str, str | None] = {}
        self.disabled = False

    def poll(self) -> int:
        """Emit every line written since the last poll; returns how many."""
        if self.disabled:
            return 0
        logs = client(self.aws, "logs")
        emitted = 0
        try:
            streams = logs.describe_log_streams(logGroupName=self.group, logStreamNamePrefix=f"{self.job}/")
            for stream in sorted(s["logStreamName"] for s in streams.get("logStreams", [])):
                emitted += self._drain(logs, stream)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                self.disabled = True
                self.on_line(f"(CloudWatch logs of {self.job} not shown: {error_message(exc)})")
        return emitted

    def _drain(self, logs, stream: str) -> int:
        emitted = 0
        while True:
            args = {"logGroupName": self.group, "logStreamName": stream, "startFromHead": True}
            if self.tokens.get(stream):
                args["nextToken"] = self.tokens[stream]
            page = logs.get_log_events(**args)
            for event in page.get("events", []):
                self.on_line(f"{stream.split('/', 1)[-1]} | {event['message'].rstrip()}")
                emitted += 1
            token = page.get("nextForwardToken")
            if not page.get("events") or token == self.tokens.get(stream):
                self.tokens[stream] = token
                return emitted
            self.tokens[stream] = token


@contextmanager
def stop_on_interrupt(
    aws: AwsConfig,
    kind: JobKind,
    names: Iterable[str],
    on_line: Callable[[str], None],
    also: tuple[type[BaseException], ...] = (),
) -> Iterator[None]:
    """On Ctrl-C (or one of ``also``), stop every job in ``names`` that has not ended, say so, re-raise."""
    try:
        yield
    except (KeyboardInterrupt, *also) as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        ended = kind.ended(aws)
        for name in names:
            try:
                if ended(kind.describe(aws, name)):
                    continue
                kind.stop(aws, name)
                on_line(f"{why}: stopped {kind.noun} {name} (Stop{kind.api})")
            except botocore.exceptions.ClientError as err:
                on_line(f"{why}: could not stop {kind.noun} {name}: {error_message(err)}")
        raise


def wait_for(
    aws: AwsConfig,
    kind: JobKind,
    name: str,
    progress: Progress = NO_PROGRESS,
    status_line: Callable[[dict], str] | None = None,
) -> dict:
    """Poll ``Describe<Kind>`` every ``aws.poll_seconds`` until the job ends, streaming its logs; Ctrl-C stops it.

    SageMaker enforces every job's own stopping condition, so the wait ends. Returns the final
    description; a job that did not complete raises one line with SageMaker's ``FailureReason``.
    """
    task = progress.task(f"{kind.noun} {name}")
    tail = LogTail(aws, kind.log_group, name, progress.log)
    ended = kind.ended(aws)

    def check() -> dict | None:
        try:
            described = kind.describe(aws, name)
        except botocore.exceptions.ClientError as exc:
            raise NcfError(f"{kind.noun} {name}: {error_message(exc)}") from None
        tail.poll()
        task.update(status=status_line(described) if status_line else kind.status(described))
        return described if ended(described) else None

    with stop_on_interrupt(aws, kind, [name], progress.log):
        described = poll(check, aws.poll_seconds)
    status = kind.status(described)
    if status.lower() != "completed":
        raise NcfError(f"{kind.noun} {name} ended {status}: {described.get('FailureReason') or 'no reason given'}")
    task.finish()
    return described
