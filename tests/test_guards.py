"""Guards on the project's shape: import direction, package names, CLI help, start-up, wheel contents."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import distributions
from pathlib import Path

import click
import pytest
import typer

from common.cli import build_app
from common.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "client", "server", "simulations")
# package -> top-level packages it must never import
FORBIDDEN = {
    "common": {"client", "server", "simulations"},
    "client": {"server", "simulations"},
    "server": {"client", "simulations"},
}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {sorted(_imported_top_levels(path) & FORBIDDEN[package])}"
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imported_top_levels(path) & FORBIDDEN[package]
    ]
    assert not offenders, "\n".join(offenders)


def test_no_other_distribution_claims_our_package_names() -> None:
    claims: list[str] = []
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "fedscan":
            continue
        top_level = dist.read_text("top_level.txt")
        tops = set(top_level.split()) if top_level else set()
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info", ".data")):
                tops.add(parts[0])
        clash = tops & set(PACKAGES)
        if clash:
            claims.append(f"{name} provides {sorted(clash)}")
    assert not claims, "other installed distributions claim fedscan's package names: " + "; ".join(claims)


def _walk(command: click.Command, path: str = "fedscan"):  # type: ignore[no-untyped-def]
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_has_help_with_an_example() -> None:
    root = typer.main.get_command(build_app())
    seen = dict(_walk(root))
    assert {"fedscan site", "fedscan server", "fedscan sim", "fedscan audit", "fedscan demo"} <= set(seen)
    missing = [
        path
        for path, cmd in seen.items()
        if not (cmd.help or "").strip() or "Example" not in (cmd.help or "")
    ]
    assert not missing, f"commands without help or without an example: {missing}"


def test_cli_start_up_imports_neither_torch_nor_flwr() -> None:
    code = (
        "import sys; from common.cli import build_app; build_app(); "
        "print(sorted(m for m in ('torch', 'flwr', 'pydicom', 'sklearn', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"heavy modules imported at CLI start-up: {out.strip()}"


def test_fedscan_version_and_help_run_as_a_command() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "common.cli", "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.startswith("fedscan ")
    helptext = subprocess.run([sys.executable, "-m", "common.cli", "--help"], capture_output=True, text=True)
    assert helptext.returncode == 0
    for group in ("site", "server", "sim", "audit", "demo"):
        assert group in helptext.stdout


def test_library_errors_become_one_line_and_an_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "common.cli", "site", "inspect", "--site-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr


def test_flower_app_config_matches_run_config_defaults() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["tool"]["flwr"]["app"]["config"]
    assert RunConfig.from_flower(declared) == RunConfig()
    assert set(declared) == set(RunConfig().to_flower())
    components = pyproject["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "server.server_app:app", "clientapp": "client.client_app:app"}


def test_wheel_ships_exactly_the_four_packages(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fedscan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    tops = {t for t in tops if not t.endswith(".dist-info")}
    assert tops == set(PACKAGES)


def test_simulations_switch_flower_telemetry_and_update_checks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo and `fedscan sim` go through run_federation, which must switch Flower's calls home off
    itself (a user's shell does not have our test settings)."""
    from simulations.runtime import run_federation

    for key in ("FLWR_TELEMETRY_ENABLED", "FLWR_DISABLE_UPDATE_CHECK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="out-dir"):
        run_federation(RunConfig().to_flower(), num_sites=2)  # no out-dir: refused before any Flower work
    import os

    assert os.environ["FLWR_TELEMETRY_ENABLED"] == "0"
    assert os.environ["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"


#: Flower's internals (not its app-facing API): only common/flower_runtime/ may touch them, so that an
#: upgrade of Flower is a review of that one package.
_FLOWER_INTERNALS = re.compile(
    r"flwr\.(cli|proto|supercore|superlink|supernode|server\.superlink|server\.compat\.app_utils"
    r"|simulation\.run_simulation)\b"
)
#: Known exceptions, each with its reason; the list only shrinks.
_INTERNALS_ALLOWED = {
    "client/dp_mods.py": "Flower's own DP helpers (flwr.supercore.differential_privacy), used as a library",
}


def test_flowers_internals_are_touched_only_in_the_flower_runtime_package() -> None:
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("common/flower_runtime/") or relative in _INTERNALS_ALLOWED:
                continue
            found = sorted({m.group(0) for m in _FLOWER_INTERNALS.finditer(path.read_text())})
            if found:
                offenders.append(f"{relative}: {', '.join(found)}")
    assert not offenders, "\n".join(offenders)
