"""The conventions every ``ncfctl`` command shares, checked across all of them (in-process unless stated).

Choices come from the config's ``Literal`` fields, commands are module-level functions, the JSON
flag is one parameter, artifact results start with ``id``, ``kind``, ``path``, bad flags are refused
before torch & co. are imported, and tables never break a word.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest
import typer
from rich.console import Console

from ncfctl import config as config_module
from ncfctl.cli import options
from ncfctl.cli.app import app
from ncfctl.cli.output import Output

FLAG_ONLY_CHOICES = {options.RecommendBackend, typing.Literal["Approved", "Rejected", "PendingManualApproval"]}


def _commands(command=None, path=()):
    """(command path, the function typer calls) for every command and group callback of the app."""
    command = command or typer.main.get_command(app)
    if command.callback is not None and path:
        yield path, getattr(command.callback, "__wrapped__", command.callback)
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def _config_literals() -> set:
    sections = [getattr(config_module, name) for name in dir(config_module) if name.endswith("Config")]
    return {
        field.annotation
        for section in sections
        if isinstance(section, type) and hasattr(section, "model_fields")
        for field in section.model_fields.values()
        if typing.get_origin(field.annotation) is typing.Literal
    }


def _literal(hint) -> typing.Any:
    """The ``Literal`` inside ``Annotated[Literal[...] | None, ...]``, if any."""
    for arg in typing.get_args(hint) or ():
        if typing.get_origin(arg) is typing.Literal:
            return arg
        found = _literal(arg)
        if found is not None:
            return found
    return None


COMMANDS = list(_commands())


def test_every_command_is_a_module_level_function():
    assert len(COMMANDS) >= 20
    for path, function in COMMANDS:
        module = sys.modules[function.__module__]
        assert getattr(module, function.__name__, None) is function, (path, function.__qualname__)
        assert "<locals>" not in function.__qualname__, path


def test_every_choice_is_a_config_literal():
    known = _config_literals() | FLAG_ONLY_CHOICES
    checked = 0
    for path, function in COMMANDS:
        for name, hint in typing.get_type_hints(function, include_extras=True).items():
            literal = _literal(hint)
            if literal is not None:
                checked += 1
                assert literal in known, (path, name, literal)
    assert checked >= 15


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["prune"], "magnitude|structured"),
        (["prune"], "mlp-first|uniform"),
        (["train"], "gmf|mlp|neumf|als|bpr"),
        (["data"], "leave-one-out|ratio"),
        (["deploy"], "auto|local|sagemaker"),
        (["build-image"], "auto|docker|buildah|codebuild|none"),
    ],
)
def test_help_lists_the_choices(cli, command, shown):
    result = cli(*command, "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0 and shown in result.stdout


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS])
def test_help_in_80_columns_keeps_every_choice_list_whole(cli, path):
    """Help wraps between words: each flag's list of choices stays whole, e.g. <magnitude|structured>."""
    function = dict(COMMANDS)[path]
    hints = typing.get_type_hints(function, include_extras=True).values()
    lists = ["<" + "|".join(typing.get_args(literal)) + ">" for literal in map(_literal, hints) if literal]
    text = cli(*path, "--help", env={"COLUMNS": "80"}).stdout
    assert all(len(line) <= 80 for line in text.splitlines())
    assert [shown for shown in lists if shown not in text] == []


def test_the_json_flag_is_one_parameter_everywhere():
    with_json = 0
    for path, function in COMMANDS:
        hints = typing.get_type_hints(function, include_extras=True)
        json_params = [name for name, hint in hints.items() if hint == options.JsonOpt]
        assert "json" not in hints, path
        if json_params:
            with_json += 1
            assert json_params == ["json_output"], path
    assert with_json >= 18


def test_artifact_results_start_with_id_kind_path(cli, workdir):
    env = {
        "NCFCTL_DATA__SYNTHETIC__USERS": "60",
        "NCFCTL_DATA__SYNTHETIC__ITEMS": "80",
        "NCFCTL_DATA__SYNTHETIC__INTERACTIONS": "900",
        "NCFCTL_DATA__SYNTHETIC__MIN_PER_USER": "5",
        "NCFCTL_DATA__EVAL_NEGATIVES": "20",
    }
    steps = [
        (["data"], "dataset"),
        (["train", "--model", "gmf", "--factors", "4", "--epochs", "1", "--top-k", "5"], "model"),
        (["prune", "--rate", "0.5"], "model"),
        (["neo", "compile", "--backend", "local"], "compiled"),
        (["build-image", "--backend", "none"], "image"),
    ]
    for args, kind in steps:
        result = cli(*args, "--json", env=env)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert list(payload)[:3] == ["id", "kind", "path"], args
        assert payload["kind"] == kind and payload["id"] in payload["path"], args
        assert "(this artifact)" not in result.stdout


def test_deploy_options_before_a_subcommand_are_refused(cli):
    result = cli("deploy", "--port", "8080", "status")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == ["Error: --port: give the options of `deploy status` after it"]


def test_deploy_acts_on_a_deployment_only_through_its_subcommands(cli):
    assert cli("deploy", "--stop").exit_code == 2  # no such option: `deploy stop` is the one way
    assert "stop" in cli("deploy", "--help", env={"COLUMNS": "200"}).stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["prune", "--rate", "5"], ["--rate: config key 'prune.rate'", "(got 5.0)"]),
        (["train", "--lr", "-1"], ["--lr: config key 'train.lr'"]),
        (["prune", "--method", "lottery"], ["'--method'", "'lottery'", "see `ncfctl prune --help`"]),
        (["train", "--nope"], ["No such option: --nope"]),
    ],
)
def test_errors_name_the_flag_in_one_line(cli, args, fragments):
    from conftest import assert_one_line_error

    assert_one_line_error(cli(*args), *fragments)


def test_a_key_set_by_the_environment_names_no_flag(cli):
    from conftest import assert_one_line_error

    line = assert_one_line_error(cli("prune", env={"NCFCTL_PRUNE__RATE": "5"}), "config key 'prune.rate'")
    assert "--rate" not in line


HEAVY = ("torch", "pandas", "matplotlib", "sagemaker", "onnxruntime", "sklearn")
REFUSED = [
    ["--help"],
    ["train", "--layers", "16,x"],
    ["train", "--model", "als", "--layers", "8"],
    ["prune", "--rate", "5"],
    ["prune", "--method", "lottery"],
    ["data", "--dataset", "ml-2m"],
    ["neo", "compile", "--model", "a", "--model-package", "b"],
    ["deploy", "--port", "1", "stop"],
    ["bench", "--repeats", "0"],
]


def test_help_and_bad_flags_import_nothing_heavy(tmp_path):
    """A real interpreter (imports are per process): each command line runs, then sys.modules is read."""
    script = f"""
import json, sys
from ncfctl.cli.app import main
for args in {REFUSED!r}:
    sys.argv = ["ncfctl", *args]
    try:
        main()
    except SystemExit as exited:
        assert exited.code in (0, 2), (args, exited.code)
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={"NCFCTL_WORKDIR": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "80"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def _words(text: str) -> set[str]:
    return {word.strip("│┃|") for word in text.split()} - {""}


def test_tables_do_not_break_words_in_a_pipe_at_80_columns(tmp_path):
    """``ncfctl neo targets | cat`` at 80 columns: every word of every cell arrives whole."""
    from ncfctl.targets import TARGETS

    proc = subprocess.run(
        [sys.executable, "-m", "ncfctl", "neo", "targets"],
        capture_output=True,
        text=True,
        env={"NCFCTL_WORKDIR": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "80"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    shown = _words(proc.stdout)
    expected = {word for t in TARGETS.values() for word in (t.name, t.instance, *t.description.split())}
    assert expected <= shown, sorted(expected - shown)
    assert {"accelerator", "description", "sagemaker"} <= shown


def test_a_narrow_terminal_wraps_between_words():
    out = Output()
    out.stdout = Console(width=64, force_terminal=True, color_system=None, record=True, soft_wrap=True)
    rows = [
        {"variant": "model-20261127-101500-ab12", "runtime": "onnxruntime", "note": "pruned then fine-tuned twice"},
        {"variant": "original", "runtime": "torch", "note": "the trained model as it was"},
    ]
    out.table(rows, title="variants")
    text = out.stdout.export_text()
    for row in rows:
        for value in row.values():
            assert set(value.split()) <= _words(text), value
    assert max(len(line) for line in text.splitlines()) <= 64  # it still fits: the note wrapped instead


def test_a_terminal_too_narrow_for_whole_words_gets_a_table_per_row():
    """A terminal would wrap a too-wide table's lines mid-word: each row becomes its own key/value table."""
    from ncfctl.targets import TARGETS

    out = Output()
    out.stdout = Console(width=80, force_terminal=True, color_system=None, record=True, soft_wrap=True)
    rows = [
        {"target": t.name, "arch": t.arch, "accelerator": t.accelerator or "cpu", "instance": t.instance,
         "vcpus": t.vcpus, "backends": "local, sagemaker", "description": t.description}
        for t in TARGETS.values()
    ]  # fmt: skip
    out.table(rows, title="neo targets")
    text = out.stdout.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    for row in rows:
        assert f"target {row['target']}" in text
        assert {row["instance"], *row["description"].split()} <= _words(text)
