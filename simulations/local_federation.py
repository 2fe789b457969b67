"""A federation of local site directories, provisioned the way real sites join one: by enrolment requests.

Each site writes its public enrolment request (``fedscan site enrol``), the coordinator provisions the
federation from them (``fedscan server provision --request``); no site's private key is ever copied.
Used by ``fedscan demo --deployment``, the deployment benchmarks and the real-process tests, so that
every local federation follows the same path as one spread over hospitals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_enrolment import enrol_site
from common.enrolment import read_request
from common.fsio import write_private_atomic
from server.provision import Federation, provision

__all__ = ["forget_publishers", "provision_local_federation"]


def provision_local_federation(
    sites: Sequence[SiteDir],
    out: Path,
    superlink_address: str,
    *,
    federation: str = "local",
    requests_dir: Path | None = None,
    pending: Sequence[str] = (),
    extra_names: Sequence[str] = (),
) -> Federation:
    """Enrol every site (requests in ``requests_dir``, default ``out``'s sibling ``requests/``) and provision.

    ``pending`` names extra sites listed without a request (not enrolled yet); ``extra_names`` are other
    addresses of the SuperLink for its certificate.
    """
    out = Path(out)
    requests_dir = Path(requests_dir) if requests_dir is not None else out.parent / f"{out.name}-requests"
    requests_dir.mkdir(parents=True, exist_ok=True)
    requests = []
    for site in sites:
        site_id = SiteConfig.load(site.config_file).site_id
        path = requests_dir / f"{site_id}.json"
        enrol_site(site, path)
        requests.append(read_request(path))
    ids = [r.site_id for r in requests]
    return provision(
        out, federation, [*ids, *pending], superlink_address, requests=requests, extra_names=extra_names
    )


def forget_publishers(site: SiteDir) -> None:
    """Make ``site`` trust no publisher again, so that its next ``site run`` adopts a new kit's key.

    For local experiments that move one site directory between federations; a real site that changes
    federation edits ``[policy] trusted_publishers`` in its site.toml (and the change is audited).
    """
    config = SiteConfig.load(site.config_file)
    policy = dataclasses.replace(config.policy, trusted_publishers=())
    write_private_atomic(site.config_file, dataclasses.replace(config, policy=policy).to_toml().encode())
