"""How many sites a round samples, and whether ``fraction-fit`` means what it says.

Flower's strategies sample ``max(int(n * fraction_fit), min_fit_clients)`` of the ``n`` available
sites per round (``flwr.server.strategy.FedAvg.num_fit_clients``). Whenever ``min-fit-sites`` is the
larger of the two, ``fraction-fit`` has no effect: with 3 sites, ``fraction-fit = 0.05`` and
``min-fit-sites = 3`` every site trains in every round. An epsilon booked with ``q = fraction-fit``
would then be an order of magnitude too small (2.16 booked, 19.05 spent, in issue #19's
reproduction). :func:`check_fraction_fit` refuses such a configuration with the figures, so the
coordinator sets the fraction that actually happens.

Even a fraction that does bind gives a *site* no amplification against the coordinator, who knows
which sites it contacted: the sites book ``q = 1`` for client-level DP whatever this module says.
The sampled fraction only feeds the figure labelled "amplified" that the server may report for users
of the released model (who do not see which sites took part).
"""

from __future__ import annotations

from common.errors import ConfigError

__all__ = ["check_fraction_fit", "sites_per_round"]


def sites_per_round(available: int, fraction_fit: float, min_fit_sites: int) -> int:
    """The number of sites Flower samples for a fit round out of ``available``.

    ``max(int(available * fraction_fit), min_fit_sites)``, never more than are available (Flower then
    waits for more, or the round fails).
    """
    if available < 1:
        raise ValueError(f"A federation has at least one site, not {available}.")
    return min(available, max(int(available * fraction_fit), min_fit_sites))


def check_fraction_fit(fraction_fit: float, min_fit_sites: int, available: int) -> None:
    """Refuse a ``fraction-fit`` below 1 that ``min-fit-sites`` overrides (it would not be the rate).

    Raises
    ------
    ConfigError
        Naming the sampled count, the effective fraction and what to set instead.
    """
    if fraction_fit >= 1:
        return
    drawn = int(available * fraction_fit)
    if drawn >= min_fit_sites:
        return
    sampled = sites_per_round(available, fraction_fit, min_fit_sites)
    effective = sampled / available
    instead = (
        "set fraction-fit = 1.0 (every site trains every round)"
        if sampled >= available
        else f"set fraction-fit = {effective:.4g} (the fraction that happens) or lower min-fit-sites"
    )
    raise ConfigError(
        f"fraction-fit {fraction_fit:g} has no effect with min-fit-sites {min_fit_sites} and {available} "
        f"site(s): Flower samples max(int({available} x {fraction_fit:g}), {min_fit_sites}) = {sampled} of "
        f"{available} sites per round, a fraction of {effective:.4g}, so an epsilon accounted at "
        f"{fraction_fit:g} would be wrong; {instead}."
    )
