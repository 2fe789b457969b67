"""The site policy: site.toml validation, the pure check, and the ClientApp refusing before decrypting.

The ClientApp tests call the real ``client.client_app.app`` (policy mod, SecAgg+ mod, the client) in
this process on a real sealed store, with Flower messages built the way the ServerApp builds them, and
count every decryption the store performs: a refused round must decrypt nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

import client.store
from client.audit_mod import REFUSAL_REASON
from client.epsilon_ledger import EpsilonLedger, LedgerEntry, Release
from client.policy import Refusal, RoundRequest, SitePolicy, app_hash, check_round, refusals_file
from client.round_tally import count_round, read_tally
from client.site import SiteDir
from client.site_config import SiteConfig
from client.site_init import init_site, load_site_key
from client.store import Record, StoreWriter
from common.config import RunConfig
from common.errors import ConfigError
from common.models import model_from_config
from common.privacy.refusals import parse_refusal

# -- site.toml -------------------------------------------------------------------------------------


def test_site_init_writes_the_safe_policy_and_it_reads_back(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", "a")
    policy = SiteConfig.load(site.config_file).policy
    assert policy == SitePolicy()
    assert policy.require_secure_aggregation and policy.min_sites == 3 and not policy.has_budget


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("require_secure_aggregation = 1", "require_secure_aggregation"),
        ("min_sites = 1", "min_sites"),
        ('min_sites = "3"', "min_sites"),
        ('allowed_models = ["cnn", "gpt"]', "allowed_models"),
        ('allowed_models = "cnn"', "allowed_models"),
        ("max_epsilon = -1.0", "max_epsilon"),
        ("max_delta = 0.5e1", "max_delta"),
        ('approved_app_hashes = ["abc"]', "approved_app_hashes"),
        ("colour = 3", "colour"),
    ],
)
def test_each_bad_policy_field_is_named(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nid = "a"\n\n[policy]\n{line}\n')
    with pytest.raises(ConfigError) as error:
        SiteConfig.load(path)
    assert str(path) in str(error.value) and field in str(error.value)


def test_a_full_policy_round_trips(tmp_path: Path) -> None:
    policy = SitePolicy(
        require_secure_aggregation=False,
        min_sites=5,
        allowed_models=("svm",),
        max_epsilon=4.5,
        max_delta=1e-6,
        approved_app_hashes=("ab" * 32,),
    )
    path = tmp_path / "site.toml"
    path.write_text(SiteConfig(site_id="a", policy=policy).to_toml())
    assert SiteConfig.load(path).policy == policy


# -- the pure check --------------------------------------------------------------------------------

_OK = RoundRequest(app_hash="ab" * 32, model="cnn", training=True, secure=True, num_sites=5)


@pytest.mark.parametrize(
    ("policy", "request_change", "code"),
    [
        (SitePolicy(approved_app_hashes=("cd" * 32,)), {}, "unapproved-app"),
        (SitePolicy(allowed_models=("svm",)), {}, "model-not-allowed"),
        (SitePolicy(), {"secure": False}, "no-secure-aggregation"),
        (SitePolicy(), {"secure": False, "run_wants_secure": True}, "secure-aggregation-mismatch"),
        (SitePolicy(), {"delta": 1e-3}, "delta-too-large"),
        (SitePolicy(max_epsilon=3.0), {}, "no-differential-privacy"),
        (SitePolicy(), {"num_sites": 2}, "too-few-sites"),
        (
            SitePolicy(max_epsilon=3.0),
            {"differentially_private": True, "epsilon_spent": 3.0},
            "budget-exhausted",
        ),
    ],
)
def test_each_refusal_reason(policy: SitePolicy, request_change: dict, code: str) -> None:
    import dataclasses

    refusal = check_round(policy, dataclasses.replace(_OK, **request_change))
    assert refusal is not None and refusal.code == code
    assert parse_refusal(f"Error(code=6, reason='{refusal.wire_reason}')") == code


def test_a_round_inside_the_policy_passes_and_evaluation_needs_no_secure_aggregation() -> None:
    assert check_round(SitePolicy(), _OK) is None
    evaluation = RoundRequest(app_hash="ab" * 32, model="cnn", training=False)
    assert check_round(SitePolicy(), evaluation) is None
    assert check_round(SitePolicy(allowed_models=("svm",)), evaluation) is not None


def test_app_hash_is_a_stable_sha256() -> None:
    assert len(app_hash()) == 64 and app_hash() == app_hash()


# -- the real ClientApp, before any decryption -----------------------------------------------------


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages outside a Flower process need the task identity Flower sets in its own processes."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every object the store decrypts (manifest or shard), in order."""
    seen: list[str] = []

    def counting(original: Callable) -> Callable:
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            seen.append(str(kwargs.get("object_id")))
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(client.store, "open_file", counting(client.store.open_file))
    monkeypatch.setattr(client.store, "open_bytes", counting(client.store.open_bytes))
    yield seen


def _site(root: Path, policy: SitePolicy) -> SiteDir:
    site = init_site(root, root.name, policy=policy)
    rng = np.random.default_rng(0)
    writer = StoreWriter(site.store_dir, load_site_key(site), image_size=16, split_fractions=(0.6, 0.0, 0.4))
    for i in range(20):
        pixels = rng.random((16, 16)).astype(np.float32)
        writer.add(Record(pixels=pixels, label=i % 2, patient=f"p{i}", study=f"s{i}"))
    writer.commit()
    return site


def _call(site: SiteDir, config: RunConfig, content: RecordDict, kind: str = "train") -> Message:
    from client.client_app import app

    context = Context(
        run_id=7,
        node_id=1,
        node_config={"site-dir": str(site.root)},
        state=RecordDict(),
        run_config=config.to_flower(),  # type: ignore[arg-type]
    )
    return app(Message(content=content, dst_node_id=1, message_type=kind), context)


def _plain_fit(config: RunConfig) -> RecordDict:
    parameters = ndarrays_to_parameters(model_from_config(config).get_arrays())
    return compat.fitins_to_recorddict(FitIns(parameters, {"server-round": 1}), True)


def _secagg_setup(sites: int) -> RecordDict:
    configs = ConfigRecord(
        {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: sites,
            Key.SHARE_NUMBER: sites,
            Key.THRESHOLD: sites - 1,
            Key.CLIPPING_RANGE: 64.0,
            Key.TARGET_RANGE: 2**22,
            Key.MOD_RANGE: 2**32,
            Key.MAX_WEIGHT: 100.0,
        }
    )
    return RecordDict({RECORD_KEY_CONFIGS: configs})


SVM = {"model": "svm", "image_size": 16, "min_fit_sites": 3}
_PLAIN = {"secure_aggregation": False}


def _PLAIN_POLICY(**caps: Any) -> SitePolicy:  # noqa: N802 - reads like the constructor it wraps
    return SitePolicy(require_secure_aggregation=False, **caps)


def _three_rounds_today(site: SiteDir) -> None:
    for _ in range(3):
        count_round(site, "earlier-run")


def _exhausted_ledger(site: SiteDir) -> None:
    entry = LedgerEntry(1, "m-1", "earlier-run", 1, (Release("sample", 0.5, 0.5, 200),), 1e-5)
    EpsilonLedger(site).append(load_site_key(site), [entry])


@pytest.mark.parametrize(
    ("policy", "config", "content", "prepare", "code"),
    [
        (SitePolicy(), {"secure_aggregation": False}, "plain", None, "no-secure-aggregation"),
        (SitePolicy(), {}, "plain", None, "secure-aggregation-mismatch"),
        (SitePolicy(allowed_models=("cnn",)), {}, "setup-5", None, "model-not-allowed"),
        (SitePolicy(min_sites=4), {}, "setup-3", None, "too-few-sites"),
        (
            SitePolicy(max_epsilon=5.0),
            {"sample_dp": True, "sample_dp_noise": 1.0},
            "setup-5",
            _exhausted_ledger,
            "budget-exhausted",
        ),
        (SitePolicy(approved_app_hashes=("0" * 64,)), {}, "setup-5", None, "unapproved-app"),
        (_PLAIN_POLICY(max_local_epochs=2), {**_PLAIN, "local_epochs": 3}, "plain", None, "work-over-cap"),
        (_PLAIN_POLICY(max_local_steps=50), {**_PLAIN, "local_steps": 51}, "plain", None, "work-over-cap"),
        (_PLAIN_POLICY(max_threads=2), {**_PLAIN, "threads": 3}, "plain", None, "work-over-cap"),
        # One step of an enormous batch: a step's work is its batch (the SVM trains steps x batch-size
        # samples; a torch model takes the whole split per step, in memory at once).
        (
            _PLAIN_POLICY(max_local_steps=1),
            {**_PLAIN, "local_steps": 1, "batch_size": 5000},
            "plain",
            None,
            "work-over-cap",
        ),
        (
            _PLAIN_POLICY(max_rounds_per_run=4),
            {**_PLAIN, "num_server_rounds": 5},
            "plain",
            None,
            "work-over-cap",
        ),
        (_PLAIN_POLICY(max_rounds_per_day=3), _PLAIN, "plain", _three_rounds_today, "rate-over-cap"),
        (_PLAIN_POLICY(), _PLAIN, "plain-resized", None, "parameters-mismatch"),
        (_PLAIN_POLICY(), _PLAIN, "plain-extra", None, "parameters-mismatch"),
        (_PLAIN_POLICY(max_message_mb=0.001), _PLAIN, "plain", None, "message-too-large"),
        # A plain run whose training message also carries a SecAgg+ stage record: the stage is only
        # the server's word (no SecAgg+ mod runs in a plain run, the update leaves unmasked), so every
        # check of a plain round still applies, whatever stage it claims.
        (SitePolicy(), {"secure_aggregation": False}, "plain+unmask", None, "no-secure-aggregation"),
        (SitePolicy(), {"secure_aggregation": False}, "plain+setup", None, "no-secure-aggregation"),
        (
            _PLAIN_POLICY(max_epsilon=5.0),
            {**_PLAIN, "sample_dp": True, "sample_dp_noise": 1.0},
            "plain+unmask",
            _exhausted_ledger,
            "budget-exhausted",
        ),
        (_PLAIN_POLICY(), _PLAIN, "plain-resized+setup", None, "parameters-mismatch"),
        (_PLAIN_POLICY(max_rounds_per_day=3), _PLAIN, "plain+setup", _three_rounds_today, "rate-over-cap"),
    ],
)
def test_the_client_app_refuses_before_decrypting_anything(
    tmp_path: Path,
    decryptions: list[str],
    policy: SitePolicy,
    config: dict,
    content: str,
    prepare: Callable[[SiteDir], None] | None,
    code: str,
) -> None:
    site = _site(tmp_path / "hospital", policy)
    if prepare is not None:
        prepare(site)
    run = RunConfig(**{**SVM, **config})
    if content.startswith("plain"):
        content, _, claimed_stage = content.partition("+")
        arrays = model_from_config(run).get_arrays()
        if content == "plain-resized":  # the run's model, but one array of another shape
            arrays[0] = np.zeros((arrays[0].shape[0], arrays[0].shape[1] + 1), arrays[0].dtype)
        elif content == "plain-extra":  # the run's model and one array more
            arrays.append(np.zeros(10, np.float32))
        message = compat.fitins_to_recorddict(
            FitIns(ndarrays_to_parameters(arrays), {"server-round": 1}), True
        )
        if claimed_stage:  # the stage record of a SecAgg+ message, claiming 9 sites
            message[RECORD_KEY_CONFIGS] = ConfigRecord({Key.STAGE: claimed_stage, Key.SAMPLE_NUMBER: 9})
    else:
        message = _secagg_setup(int(content.split("-")[1]))
    reply = _call(site, run, message)
    assert reply.has_error()
    assert reply.error.reason == f"fedscan-refusal:{code}"  # the code, and nothing else, leaves the site
    assert decryptions == []  # neither the manifest nor any shard was opened
    lines = [json.loads(line) for line in refusals_file(site).read_text().splitlines()]
    assert [line["code"] for line in lines] == [code] and lines[0]["reason"]
    audit = [json.loads(line) for line in (site.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "round.refused" and audit[-1]["details"]["reason"] == REFUSAL_REASON[code]


def test_a_round_inside_the_policy_trains_and_the_counter_sees_it(
    tmp_path: Path, decryptions: list[str]
) -> None:
    """Positive control: the same path, allowed, does decrypt the store (so the counter above works)."""
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False))
    run = RunConfig(**{**SVM, "secure_aggregation": False})
    reply = _call(site, run, _plain_fit(run))
    assert not reply.has_error()
    assert "store/manifest" in decryptions and any(d.startswith("store/shards/") for d in decryptions)
    fitres = compat.recorddict_to_fitres(reply.content, False)
    assert fitres.metrics["sample-epsilon"] == -1.0  # trained without DP: the ledger says so
    report = EpsilonLedger(site).report(load_site_key(site), 1e-5)
    assert report["total_epsilon"] == "inf"
    assert read_tally(site).in_run("7") == 1  # the site counted the round it took


def _model_bytes(run: RunConfig) -> int:
    return sum(len(a) for a in ndarrays_to_parameters(model_from_config(run).get_arrays()).tensors)


@pytest.mark.parametrize(
    ("change", "code"), [("resized", "parameters-mismatch"), ("oversized", "message-too-large")]
)
def test_an_evaluation_over_the_caps_is_refused_before_decrypting_anything(
    tmp_path: Path, decryptions: list[str], change: str, code: str
) -> None:
    """An evaluate message decrypts the store as a training one does: its model is held to the same
    shapes and size before anything is decrypted (else the server could send any model, of any size,
    to be run on the site's held-out data, as often as it likes)."""
    run = RunConfig(**SVM)
    limit = (_model_bytes(run) + 4096) / 2**20  # the run's model fits, a larger one does not
    site = _site(tmp_path / "hospital", SitePolicy(max_message_mb=limit))
    arrays = model_from_config(run).get_arrays()
    if change == "resized":
        arrays[0] = np.zeros((arrays[0].shape[0], arrays[0].shape[1] + 1), arrays[0].dtype)
    else:
        arrays[0] = np.zeros((arrays[0].shape[0] + 100, *arrays[0].shape[1:]), arrays[0].dtype)
    content = compat.evaluateins_to_recorddict(EvaluateIns(ndarrays_to_parameters(arrays), {}), True)
    reply = _call(site, run, content, "evaluate")
    assert reply.has_error() and reply.error.reason == f"fedscan-refusal:{code}"
    assert decryptions == []
    assert [json.loads(line)["code"] for line in refusals_file(site).read_text().splitlines()] == [code]
    # Positive control: the run's own model is evaluated (the store is opened for it).
    honest = compat.evaluateins_to_recorddict(
        EvaluateIns(ndarrays_to_parameters(model_from_config(run).get_arrays()), {}), True
    )
    assert not _call(site, run, honest, "evaluate").has_error()
    assert any(d.startswith("store/shards/") for d in decryptions)


def test_the_message_size_cap_counts_every_record_not_only_the_model(
    tmp_path: Path, decryptions: list[str]
) -> None:
    """A training message whose model is the run's, plus a large record of another name: the site's
    max_message_mb bounds what the message carries, wherever in it."""
    run = RunConfig(**{**SVM, "secure_aggregation": False})
    limit = (_model_bytes(run) + 4096) / 2**20
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False, max_message_mb=limit))
    content = _plain_fit(run)
    content["extra.payload"] = ArrayRecord([np.zeros(64 * 1024, np.uint8)])
    reply = _call(site, run, content)
    assert reply.has_error() and reply.error.reason == "fedscan-refusal:message-too-large"
    assert decryptions == []
    assert not _call(site, run, _plain_fit(run)).has_error()  # the same model alone is within the cap


@pytest.mark.parametrize("claimed_stage", [Stage.SETUP, Stage.UNMASK])
def test_a_plain_round_claiming_a_secagg_stage_is_counted_and_logged_as_taken(
    tmp_path: Path, claimed_stage: str
) -> None:
    """A stage record in a plain run changes nothing: the round trains in the clear, so the site counts
    it against its caps and its audit log says it took it (the server cannot make a round invisible)."""
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False))
    run = RunConfig(**{**SVM, "secure_aggregation": False})
    content = _plain_fit(run)
    content[RECORD_KEY_CONFIGS] = ConfigRecord({Key.STAGE: claimed_stage, Key.SAMPLE_NUMBER: 9})
    reply = _call(site, run, content)
    assert not reply.has_error()
    assert read_tally(site).in_run("7") == 1
    audit = [json.loads(line) for line in (site.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["event"] == "round.taken" and audit[-1]["details"]["secagg"] is False


def test_a_round_that_would_overspend_is_refused_after_reading_only_the_manifest(
    tmp_path: Path, decryptions: list[str]
) -> None:
    site = _site(tmp_path / "hospital", SitePolicy(require_secure_aggregation=False, max_epsilon=1.0))
    run = RunConfig(**{**SVM, "secure_aggregation": False, "sample_dp": True, "sample_dp_noise": 0.6})
    reply = _call(site, run, _plain_fit(run))
    assert reply.error.reason == "fedscan-refusal:budget-exhausted"
    assert decryptions == ["store/manifest"]  # the training-set size, no record


def test_refusal_codes_are_the_only_wire_text() -> None:
    refusal = Refusal("too-few-sites", "the round has 2 sites; the policy needs 3")
    assert refusal.wire_reason == "fedscan-refusal:too-few-sites"
    with pytest.raises(ValueError):
        Refusal("because", "no")
