"""The domain speaks the library's language: no CLI flag in a service error, no Rich outside the CLI.

A library caller never passed ``--layers``; a service error names ``model.layers`` (or an argument
in backticks) and lists it in ``NcfError.settings``, and the CLI alone turns it into its flag
(:mod:`ncfctl.cli.errors`). Both halves are checked here: the source of every non-CLI module, and
the CLI's flag table against the options its commands really have.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ncfctl
from ncfctl.cli.errors import FLAGS, cli_message
from ncfctl.errors import NcfError
from ncfctl.models import NCFSpec

PACKAGE = Path(ncfctl.__file__).parent
DOMAIN = [p for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.relative_to(PACKAGE).parts]
ERROR_TYPES = {"NcfError", *(kind.__name__ for kind in NcfError.__subclasses__())}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _text_of(node: ast.AST) -> str:
    """The literal text of an expression's strings (f-string parts included)."""
    return " ".join(n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str))


def _error_texts(path: Path) -> list[tuple[int, str]]:
    """The literal text of every ``NcfError(...)`` call (or of a subclass) in ``path``, of every call that hands an
    error hint on (``Workspace.resolve`` / ``require_latest``, pruning's ``load_source``), and of
    each ``WHAT`` constant (the "what needs it" of :func:`ncfctl.aws.clients.require`) and
    ``*_HINT`` constant.
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if called in ERROR_TYPES or called in ("resolve", "require_latest", "load_source"):
                found.append((node.lineno, _text_of(node)))
        elif isinstance(node, ast.Assign):
            names = [getattr(t, "id", "") for t in node.targets]
            if any(name == "WHAT" or name.endswith("_HINT") for name in names):
                found.append((node.lineno, _text_of(node.value)))
    return found


def test_no_service_error_names_a_cli_flag():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {FLAG.search(text).group()}"
        for path in DOMAIN
        for line, text in _error_texts(path)
        if FLAG.search(text)
    ]
    assert not offenders, "service errors naming CLI flags:\n" + "\n".join(offenders)


def test_rich_is_imported_by_the_cli_only():
    importers = []
    for path in DOMAIN:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(name == "rich" or name.startswith("rich.") for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert not importers


def test_a_service_error_reads_in_library_terms_and_the_cli_adds_the_flag():
    with pytest.raises(NcfError) as err:
        NCFSpec.from_layers(model_type="neumf", num_users=10, num_items=10, factors=8, layers=[15, 8])
    assert str(err.value).startswith("model.layers 15,8: need at least two widths")
    assert err.value.settings == ("model.layers",)
    assert cli_message(err.value).startswith("--layers 15,8: need at least two widths")


def test_only_the_settings_an_error_declares_become_flags():
    """A config key the error does not declare stays as it is; an argument is replaced only in backticks."""
    error = NcfError("`resume`: train.lr 0.1 differs (resume with train.lr)", hint="or not", settings=("resume",))
    assert cli_message(error) == "--resume: train.lr 0.1 differs (resume with train.lr) (or not)"


def _cli_options() -> set[str]:
    import typer

    from ncfctl.cli.app import app

    def walk(command) -> set[str]:
        options = {opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])}
        for sub in getattr(command, "commands", {}).values():
            options |= walk(sub)
        return options

    return walk(typer.main.get_command(app))


def test_every_flag_the_cli_maps_to_exists():
    options = _cli_options()
    assert "--layers" in options
    assert not {flag for flag in FLAGS.values() if flag not in options}
