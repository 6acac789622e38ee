"""The command-line frame: discovery of subcommands and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunisian_lung import __version__
from tunisian_lung.cli import EXIT_PIPE_CLOSED, EXIT_USAGE, build_parser, main


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


def test_closed_pipe_exits_quietly(tmp_path) -> None:
    # `tunisian-lung info ROOT | head -1` used to end in a BrokenPipeError traceback.
    (tmp_path / "annotations.csv").write_text(
        "patient_id,series_id,coordX,coordY,coordZ,diameter_mm,class,nodule_present,stage\n"
        "P1,S1,1.0,2.0,3.0,5.0,1,1,II\n",
        encoding="utf-8",
    )
    # `true` exits without reading, so the pipe is closed before the interpreter has started.
    command = f"set -o pipefail; {sys.executable} -m tunisian_lung info {tmp_path} | true"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    assert "Traceback" not in result.stderr
    assert "BrokenPipeError" not in result.stderr
    assert result.returncode == EXIT_PIPE_CLOSED
