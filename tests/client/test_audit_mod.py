"""The ClientApp's audit mods on the real ``client.client_app.app``: rounds taken and refused, in the log.

Messages are built the way the ServerApp builds them and handed to the real app in this process (as in
tests/client/test_policy.py); the site's own log is then read back through the verifier.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common import FitIns, GetPropertiesIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from client.policy import SitePolicy, app_hash
from client.site import SiteDir
from client.site_audit import audit_log_file, manifest_sha256
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter, read_manifest
from common.audit import Entry, read_verified_log
from common.audit.federation import MANIFEST_METRIC, SITE_ID_METRIC, SITE_IDENTITY_TASK
from common.config import RunConfig
from common.model_card import model_sha256
from common.models import model_from_config

RUN_ID = 4242
SVM = {"model": "svm", "image_size": 16, "min_fit_sites": 3}


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages outside a Flower process need the task identity Flower sets in its own processes."""
    monkeypatch.setattr(TaskIdentity, "_run_id", RUN_ID)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _site(root: Path, policy: SitePolicy) -> SiteDir:
    site = init_site(root, "Site-B", policy=policy)
    rng = np.random.default_rng(0)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=16, split_fractions=(0.6, 0.0, 0.4))
    for i in range(30):
        writer.add(
            Record(pixels=rng.random((16, 16)).astype(np.float32), label=i % 2, patient=f"p{i}", study="s")
        )
    writer.commit()
    return site


def _call(
    site: SiteDir, config: RunConfig, content: RecordDict, kind: str = "train", group: str = ""
) -> Message:
    from client.client_app import app

    context = Context(
        run_id=RUN_ID,
        node_id=1,
        node_config={"site-dir": str(site.root)},
        state=RecordDict(),
        run_config=config.to_flower(),  # type: ignore[arg-type]
    )
    return app(Message(content=content, dst_node_id=1, message_type=kind, group_id=group), context)


def _rounds(site: SiteDir) -> list[Entry]:
    verified = read_verified_log(audit_log_file(site))
    assert verified.verification.ok, verified.verification.summary()
    return [e for e in verified.entries if e.event.startswith("round.")]


def test_a_round_taken_is_logged_with_the_model_received_and_the_plain_update(tmp_path: Path) -> None:
    site = _site(tmp_path / "b", SitePolicy(require_secure_aggregation=False))
    config = RunConfig(**{**SVM, "secure_aggregation": False})
    sent = model_from_config(config).get_arrays()
    fitins = FitIns(ndarrays_to_parameters(sent), {"server-round": 2})
    reply = _call(site, config, compat.fitins_to_recorddict(fitins, True))
    assert not reply.has_error()
    fitres = compat.recorddict_to_fitres(reply.content, False)
    (entry,) = _rounds(site)
    d = entry.details
    assert (entry.event, entry.actor, d["run_id"], d["round"]) == (
        "round.taken",
        "site-b",
        "flwr-run-4242",
        2,
    )
    assert d["model_sha256"] == model_sha256(sent)
    assert d["update_sha256"] == model_sha256(parameters_to_ndarrays(fitres.parameters)) != d["model_sha256"]
    assert d["examples"] == fitres.num_examples > 0
    manifest = manifest_sha256(read_manifest(site.store_dir, load_site_key(site)))
    assert d["manifest_sha256"] == manifest and d["app_sha256"] == app_hash()
    assert (d["secagg"], d["dp"]) == (False, False) and "epsilon" not in d  # no DP: no finite epsilon
    # The server lists the site under the id its log is written by, and learns the manifest commitment.
    assert fitres.metrics[SITE_ID_METRIC] == "site-b" and fitres.metrics[MANIFEST_METRIC] == manifest


def test_a_round_with_sample_dp_logs_the_epsilon_the_ledger_reports(tmp_path: Path) -> None:
    site = _site(tmp_path / "b", SitePolicy(require_secure_aggregation=False))
    config = RunConfig(**{**SVM, "secure_aggregation": False, "sample_dp": True, "sample_dp_noise": 1.5})
    fitins = FitIns(ndarrays_to_parameters(model_from_config(config).get_arrays()), {"server-round": 1})
    reply = _call(site, config, compat.fitins_to_recorddict(fitins, True))
    epsilon = compat.recorddict_to_fitres(reply.content, False).metrics["sample-epsilon"]
    (entry,) = _rounds(site)
    assert entry.details["epsilon"] == epsilon > 0 and entry.details["delta"] == config.dp_delta
    assert entry.details["dp"] is True


def test_a_refused_round_is_logged_with_its_reason_and_nothing_is_taken(tmp_path: Path) -> None:
    site = _site(tmp_path / "b", SitePolicy(min_sites=4))
    setup = ConfigRecord(
        {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: 3,
            Key.SHARE_NUMBER: 3,
            Key.THRESHOLD: 2,
            Key.CLIPPING_RANGE: 64.0,
            Key.TARGET_RANGE: 2**22,
            Key.MOD_RANGE: 2**32,
            Key.MAX_WEIGHT: 100.0,
        }
    )
    reply = _call(site, RunConfig(**SVM), RecordDict({RECORD_KEY_CONFIGS: setup}), group="3")
    assert reply.error.reason == "fedscan-refusal:too-few-sites"
    (entry,) = _rounds(site)
    assert entry.event == "round.refused"
    assert entry.details == {
        "run_id": "flwr-run-4242",
        "round": 3,  # from the message's group id: SecAgg+'s setup stage carries no fit instructions
        "reason": "too_few_sites",
        "app_sha256": app_hash(),
    }


def test_the_site_tells_the_server_its_audit_id(tmp_path: Path) -> None:
    site = _site(tmp_path / "b", SitePolicy())
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({"task": SITE_IDENTITY_TASK}))
    reply = _call(site, RunConfig(**SVM), content, kind=MessageTypeLegacy.GET_PROPERTIES)
    assert compat.recorddict_to_getpropertiesres(reply.content).properties == {SITE_ID_METRIC: "site-b"}
    assert _rounds(site) == []
