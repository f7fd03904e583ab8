"""A library caller can tell expected failures apart by type; each is still one ``NcfError`` for the CLI."""

from __future__ import annotations

import sys

import pytest

from ncfctl.errors import (
    ArtifactCorruptError,
    ArtifactNotFoundError,
    AwsError,
    MissingExtraError,
    NcfError,
    expected_failure,
)
from ncfctl.workspace import Workspace


def test_a_missing_input_artifact_is_artifact_not_found(tmp_path):
    workspace = Workspace(tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="no model artifact in"):
        workspace.resolve(None, "model", "train a model first")
    with pytest.raises(ArtifactNotFoundError, match="no model artifact 'model-nope'"):
        workspace.resolve("model-nope", "model", "train a model first")


def test_a_modified_file_is_artifact_corrupt(tmp_path):
    workspace = Workspace(tmp_path)
    with workspace.create("deployment", info={"backend": "local", "status": "stopped"}) as writer:
        (writer.path / "notes.txt").write_text("as written")
    artifact = workspace.get(writer.id)
    artifact.file("notes.txt")
    (artifact.path / "notes.txt").write_text("changed")
    with pytest.raises(ArtifactCorruptError, match="notes.txt"):
        workspace.get(writer.id).file("notes.txt")


def test_a_missing_extra_is_missing_extra(monkeypatch):
    from ncfctl.training.baselines import import_implicit

    monkeypatch.setitem(sys.modules, "implicit", None)  # import implicit -> ImportError
    with pytest.raises(MissingExtraError, match="implicit"):
        import_implicit()


def test_a_refused_aws_request_is_aws_error():
    from botocore.exceptions import ClientError

    refused = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CreateEndpoint")
    error = expected_failure(refused)
    assert isinstance(error, AwsError) and str(error) == "AWS CreateEndpoint failed: AccessDenied: no"


@pytest.mark.parametrize("kind", [ArtifactNotFoundError, ArtifactCorruptError, MissingExtraError, AwsError])
def test_every_typed_error_is_an_expected_failure_with_exit_code_2(kind):
    error = kind("something")
    assert isinstance(error, NcfError) and expected_failure(error) is error and error.exit_code == 2
