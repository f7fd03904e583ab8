"""The workspace: every artifact a command produces, as browsable folders with manifests.

Layout under the work directory (default ``./output``)::

    data/<id>/         datasets            (kind "dataset")
    models/<id>/       trained, pruned and fine-tuned models (kind "model")
    neo/<id>/          compiled models, local or SageMaker Neo (kind "compiled")
    images/<id>/       container build contexts (kind "image")
    deployments/<id>/  running or stopped deployments (kind "deployment")
    comparison/<id>/   benchmark results (kind "benchmark")

Each artifact folder holds ``manifest.json``: kind, id, created, parent artifact id, the config
that made it, metrics, its kind's typed ``info`` (``ncfctl.artifacts``) and the sha256 of each
file. An artifact is built in a staging folder under ``.staging/`` and renamed into place only
when complete, so an interrupted command never leaves a half-written artifact that a later command
would pick up. A staging folder's name carries the pid and host of the process building it (``<id>.pid<N>.<host>``): a
process killed mid-write cannot remove its own, so the next artifact written removes staging
folders whose process is gone, never one whose process still runs.

Reading goes through :meth:`Artifact.file` / :meth:`Artifact.verify`, which check the bytes
against the manifest's sha256 before a command uses them: a file changed after ncfctl wrote it
(a flipped byte, a swapped parquet) is one line naming the artifact and file, never an input.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ncf_serving.checksums import ChecksumError, hash_folder, verify_files
from pydantic import BaseModel, Field, ValidationError, field_serializer, model_validator

from ncfctl import fileio
from ncfctl.artifacts import INFO_TYPES, ArtifactInfo
from ncfctl.errors import ArtifactCorruptError, ArtifactNotFoundError, NcfError

KIND_DIRS: dict[str, str] = {kind: info.folder for kind, info in INFO_TYPES.items()}
MANIFEST = "manifest.json"
STAGING = ".staging"


def typed_info(kind: str, info: ArtifactInfo | dict[str, Any] | None) -> ArtifactInfo:
    """``info`` validated as the ``info`` of a ``kind`` artifact (a mapping, or that kind's model)."""
    if kind not in INFO_TYPES:
        raise ValueError(f"unknown artifact kind '{kind}' (known: {', '.join(INFO_TYPES)})")
    model = INFO_TYPES[kind]
    if isinstance(info, model):
        return info
    if isinstance(info, ArtifactInfo):
        raise TypeError(f"a {info.kind} artifact's info given for a {kind} artifact")
    return model.model_validate(info or {})


class Manifest(BaseModel):
    kind: str
    id: str
    created: datetime
    parent: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    info: ArtifactInfo  # the model of ``kind`` (ncfctl.artifacts.INFO_TYPES)
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256

    @model_validator(mode="before")
    @classmethod
    def _info_of_its_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            try:
                data = {**data, "info": typed_info(data["kind"], data.get("info"))}
            except ValidationError as exc:  # located under "info", where the field is in the file
                errors = [{**error, "loc": ("info", *error["loc"])} for error in exc.errors(include_url=False)]
                raise ValidationError.from_exception_data(cls.__name__, errors) from None  # type: ignore[arg-type]
        return data

    @field_serializer("info")
    def _recorded_info(self, info: ArtifactInfo) -> dict[str, Any]:
        return info.recorded()


class Artifact:
    """A committed artifact folder and its manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self._verified: set[str] = set()  # files already checked against the manifest (each is hashed once)

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def has(self, name: str) -> bool:
        """Whether the manifest records ``name`` (optional files such as ``masks.pt``)."""
        return name in self.manifest.files

    def file(self, name: str) -> Path:
        """Path of a recorded file, after checking its bytes against the manifest's sha256."""
        if not self.has(name):
            raise ArtifactCorruptError(f"artifact {self.id} has no file '{name}' ({self.path})")
        self._check([name])
        return self.path / name

    def verify(self, under: str = "") -> Path:
        """Check every recorded file (under the subfolder ``under``, if given); returns that folder.

        For inputs read as a whole folder: a dataset, a serving bundle, a build context.
        """
        prefix = f"{under.strip('/')}/" if under else ""
        names = [name for name in self.manifest.files if name.startswith(prefix)]
        if not names:
            raise ArtifactCorruptError(f"artifact {self.id} records no files under '{under or '.'}' ({self.path})")
        self._check(names)
        return self.path / under if under else self.path

    def _check(self, names: list[str]) -> None:
        pending = [name for name in names if name not in self._verified]
        try:
            verify_files(self.path, self.manifest.files, pending)
        except ChecksumError as exc:
            raise ArtifactCorruptError(
                f"artifact {self.id}: {exc.name} {exc.problem} ({self.path})",
                hint="it was modified after ncfctl wrote it: re-create the artifact",
            ) from None
        self._verified.update(pending)

    def __repr__(self) -> str:
        return f"Artifact({self.kind}:{self.id})"


class ArtifactWriter:
    """A staging folder for an artifact being built; fill ``path`` and the manifest fields."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self.artifact: Artifact | None = None  # set once the artifact is committed

    @property
    def id(self) -> str:
        return self.manifest.id


def new_id(kind: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{kind}-{stamp}-{secrets.token_hex(2)}"


def _staging_name(artifact_id: str) -> str:
    """``<id>.pid<N>.<host>``: who is writing it (the host, so a shared work directory is safe too)."""
    return f"{artifact_id}.pid{os.getpid()}.{socket.gethostname()}"


def _writer_gone(folder: Path) -> bool:
    """True only when ``folder`` names a process of this host that no longer exists."""
    match = re.fullmatch(r".+\.pid(\d+)\.(.+)", folder.name)
    if match is None or match.group(2) != socket.gethostname() or int(match.group(1)) <= 0:
        return False  # another host's, or an older name without an owner: nothing proves it is stale
    try:
        os.kill(int(match.group(1)), 0)  # signal 0: an existence check, nothing is sent
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: it exists
        pass
    return False


def info_matches(info: ArtifactInfo, where: dict[str, Any] | None) -> bool:
    """Whether ``info`` has every ``where`` field's value (a field its kind does not declare is a bug)."""
    for name, value in (where or {}).items():
        if name not in type(info).model_fields:
            raise ValueError(f"{info.kind} artifacts record no info field '{name}'")
        if getattr(info, name) != value:
            return False
    return True


def read_manifest(folder: Path, kind: str | None = None) -> Manifest:
    """The folder's manifest; ``kind`` (the kind its folder holds) must be the manifest's own."""
    path = folder / MANIFEST
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"{folder} is not an artifact: no {MANIFEST}") from None
    except OSError as exc:
        raise NcfError(f"{path}: cannot read it ({exc.strerror})") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise ArtifactCorruptError(f"{path} is not a valid manifest: field '{field}': {first['msg']}") from None
    if kind is not None and manifest.kind != kind:
        raise NcfError(
            f"{path} says kind '{manifest.kind}' but it is in {KIND_DIRS[kind]}/, the folder of '{kind}' artifacts"
        )
    return manifest


class Workspace:
    """Artifacts under one work directory; services find their inputs here by kind or id."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise NcfError(
                f"workdir {self.root} is not a directory",
                hint="choose another `workdir` (env NCFCTL_WORKDIR)",
                settings=("workdir",),
            )

    def kind_dir(self, kind: str) -> Path:
        if kind not in KIND_DIRS:
            raise NcfError(f"unknown artifact kind '{kind}' (known: {', '.join(KIND_DIRS)})")
        return self.root / KIND_DIRS[kind]

    @contextmanager
    def create(
        self,
        kind: str,
        *,
        parent: str | None = None,
        config: dict[str, Any] | None = None,
        info: ArtifactInfo | dict[str, Any] | None = None,
    ) -> Iterator[ArtifactWriter]:
        """Build an artifact atomically.

        Inside the ``with`` block write files into ``writer.path`` and set ``writer.manifest``
        metrics/info (``info`` is validated as ``kind``'s model, ``ncfctl.artifacts``). On success
        the manifest (with file hashes) is written and the folder is renamed into ``<kind dir>/<id>``;
        on any exception the staging folder is removed.
        """
        final_dir = self.kind_dir(kind)
        artifact_id = self._unused_id(kind)
        manifest = Manifest(  # validated before anything is written
            kind=kind,
            id=artifact_id,
            created=datetime.now(UTC),
            parent=parent,
            config=config or {},
            info=typed_info(kind, info),
        )
        self.remove_stale_staging()
        staging = self.root / STAGING / _staging_name(artifact_id)
        staging.mkdir(parents=True, exist_ok=False)
        writer = ArtifactWriter(staging, manifest)
        try:
            yield writer
            writer.manifest.files = hash_folder(staging, exclude=[MANIFEST])
            fileio.write_text(staging / MANIFEST, writer.manifest.model_dump_json(indent=2) + "\n")
            final_dir.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final_dir / artifact_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        writer.artifact = Artifact(final_dir / artifact_id, writer.manifest)

    def _unused_id(self, kind: str) -> str:
        """A new id that no committed or staged artifact of ``kind`` has.

        Ids are a second-resolution stamp plus 16 random bits, so two artifacts of one kind made in
        the same second (a script, a test) collide once in tens of thousands: the second one would
        fail at the final rename, after all its work. Drawing again here makes that impossible for
        commands run one after another.
        """
        while True:
            artifact_id = new_id(kind)
            staged = (self.root / STAGING).glob(f"{artifact_id}.*")
            if not (self.kind_dir(kind) / artifact_id).exists() and next(staged, None) is None:
                return artifact_id

    def remove_stale_staging(self) -> None:
        """Delete staging folders whose writing process has exited (killed mid-write).

        A folder whose process still runs is being written and is kept, as is one of another host
        or with no owner in its name (nothing proves its writer is gone).
        """
        staging_root = self.root / STAGING
        for folder in staging_root.iterdir() if staging_root.is_dir() else []:
            if _writer_gone(folder):
                shutil.rmtree(folder, ignore_errors=True)

    def update(self, artifact: Artifact, **fields: Any) -> Artifact:
        """Rewrite a committed artifact's manifest (e.g. a deployment's status) atomically.

        The recorded sha256s stay those of the files as committed: an update never blesses a file
        that changed since (a deployment's ``server.log``, which keeps growing, is recorded as it was
        at start-up and never read as an input).
        """
        if "info" in fields:
            fields["info"] = typed_info(artifact.kind, fields["info"])
        manifest = artifact.manifest.model_copy(update={**fields, "files": artifact.manifest.files})
        fileio.write_text(artifact.path / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
        return Artifact(artifact.path, manifest)

    def list(self, kind: str | None = None) -> list[Artifact]:
        """Committed artifacts, oldest first."""
        kinds = [kind] if kind else list(KIND_DIRS)
        found: list[Artifact] = []
        for k in kinds:
            folder = self.kind_dir(k)
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if (child / MANIFEST).is_file():
                    found.append(Artifact(child, read_manifest(child, k)))
        return sorted(found, key=lambda a: a.manifest.created)

    def latest(self, kind: str, where: dict[str, Any] | None = None) -> Artifact | None:
        """The newest artifact of ``kind`` whose ``info`` matches every ``where`` item."""
        for artifact in reversed(self.list(kind)):
            if info_matches(artifact.manifest.info, where):
                return artifact
        return None

    def require_latest(
        self, kind: str, hint: str, where: dict[str, Any] | None = None, *, settings: tuple[str, ...] = ()
    ) -> Artifact:
        """The latest artifact of ``kind``, or an error with ``hint`` (``settings``: the names it uses)."""
        artifact = self.latest(kind, where)
        if artifact is None:
            raise ArtifactNotFoundError(f"no {kind} artifact in {self.root}", hint=hint, settings=settings)
        return artifact

    def get(self, ref: str, kind: str | None = None) -> Artifact:
        """An artifact by id (searched in the workspace) or by folder path."""
        as_path = Path(ref).expanduser()
        if (as_path / MANIFEST).is_file():
            artifact = Artifact(as_path.resolve(), read_manifest(as_path))
        else:
            matches = [a for a in self.list(kind) if a.id == ref]
            if not matches:
                what = f"{kind} artifact" if kind else "artifact"
                raise ArtifactNotFoundError(f"no {what} '{ref}' in {self.root}")
            artifact = matches[0]
        if kind is not None and artifact.kind != kind:
            raise NcfError(f"artifact '{ref}' is a {artifact.kind}, expected a {kind}")
        return artifact

    def resolve(
        self,
        ref: str | None,
        kind: str,
        hint: str,
        where: dict[str, Any] | None = None,
        *,
        settings: tuple[str, ...] = (),
    ) -> Artifact:
        """``ref`` if given, else the latest artifact of ``kind``: how commands find their input.

        ``hint`` says how to get one, in the library's terms; ``settings`` lists the argument names
        it uses (in backticks), which a front end shows in its own terms (the CLI as flags).
        """
        return self.get(ref, kind) if ref else self.require_latest(kind, hint, where, settings=settings)
