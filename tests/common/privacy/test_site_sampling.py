"""fraction-fit against min-fit-sites: the fraction Flower really samples, and the configurations refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.cli import main
from common.errors import ConfigError
from common.privacy.site_sampling import check_fraction_fit, sites_per_round


@pytest.mark.parametrize(
    ("available", "fraction", "minimum", "sampled"),
    [(3, 0.05, 3, 3), (10, 0.5, 2, 5), (10, 0.2, 3, 3), (100, 0.1, 2, 10), (4, 1.0, 2, 4), (2, 0.5, 5, 2)],
)
def test_sites_per_round_is_flowers_rule(available: int, fraction: float, minimum: int, sampled: int) -> None:
    assert sites_per_round(available, fraction, minimum) == sampled


def test_a_fraction_the_minimum_overrides_is_refused_with_the_fraction_that_happens() -> None:
    with pytest.raises(ConfigError, match=r"3 of 3 sites per round, a fraction of 1, .*fraction-fit = 1.0"):
        check_fraction_fit(0.05, 3, 3)
    with pytest.raises(
        ConfigError, match=r"3 of 10 sites per round, a fraction of 0.3, .*fraction-fit = 0.3"
    ):
        check_fraction_fit(0.2, 3, 10)
    check_fraction_fit(0.5, 2, 10)  # 5 of 10: the fraction is what happens
    check_fraction_fit(1.0, 3, 3)


def test_server_config_refuses_it_and_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["server", "config", "--set", "fraction-fit=0.05", "--set", "min-fit-sites=3"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--sites", "3"])
    err = capsys.readouterr().err
    assert done.value.code != 0 and "Flower samples max(int(3 x 0.05), 3) = 3 of 3 sites" in err
    with pytest.raises(SystemExit) as done:
        main(
            [
                "server",
                "config",
                "--set",
                "fraction-fit=0.5",
                "--set",
                "min-fit-sites=2",
                "--sites",
                "10",
                "--json",
            ]
        )
    assert done.value.code == 0 and '"fraction-fit": 0.5' in capsys.readouterr().out


def test_server_run_refuses_it_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.site_init import init_site
    from simulations.local_federation import provision_local_federation

    sites = [init_site(tmp_path / "sites" / name, name) for name in ("a", "b", "c")]
    fed = provision_local_federation(sites, tmp_path / "fed", "127.0.0.1:9092", federation="lung-ct")
    with pytest.raises(SystemExit) as done:
        main(["server", "run", "--kit", str(fed.server_dir), "--set", "fraction-fit=0.5"])
    err = capsys.readouterr().err
    assert done.value.code != 0 and "max(int(3 x 0.5), 3) = 3 of 3 sites" in err  # min-fit-sites: all 3
    assert not (fed.server_dir / "runs").exists()  # nothing was started
