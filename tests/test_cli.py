"""The command-line frame: discovery of subcommands and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunisian_lung import __version__
from tunisian_lung.cli import EXIT_USAGE, build_parser, main


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "COMMAND" in capsys.readouterr().err


def test_every_subcommand_has_handler() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert subparsers.choices, "no subcommand was discovered"
    for name, subparser in subparsers.choices.items():
        assert subparser.get_default("handler") is not None, f"subcommand {name!r} sets no handler"


def test_import_is_lazy_about_torch() -> None:
    code = "import sys, tunisian_lung, tunisian_lung.cli; tunisian_lung.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "importing the package or building the CLI imported torch"
