"""The packaging contract, checked without a Docker engine: Dockerfile, setup.py, both metadata.yaml files, both
spec.json files and the console scripts must agree, because Airbyte runs the image's ENTRYPOINT and reads the
registry entry built from metadata.yaml.

* Dockerfile: one build target per connector; ENTRYPOINT = the console script setup.py installs = AIRBYTE_ENTRYPOINT;
  a non-root USER; labels ``io.airbyte.name``/``io.airbyte.version`` = metadata's dockerRepository/dockerImageTag;
  the base image = metadata's ``connectorBuildOptions.baseImage``; the destination's ``/local`` folder and the
  variable that tells it it runs in the image.
* metadata.yaml (top level: source; destination_collection/metadata.yaml: destination): the registry's required
  fields and enums, a UUID4 definitionId, python tags, non-empty allowedHosts that cover every AWS endpoint the
  source's boto3 calls resolve to, and agreement with spec.json (documentationUrl, supportsRefreshes).
* setup.py: spec.json and schemas ship as package data.
* The console scripts answer ``spec`` and ``check`` as the image runs them (its ENV, a working directory outside
  the checkout): a bad config gives CONNECTION_STATUS FAILED, exit code 0, and no secret in the output.
"""
from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SETUP_PY = REPO / "setup.py"

# connector (= Docker build target = console script) -> its package and metadata file
CONNECTORS = {
    "source-kinesis": {"package": "source_kinesis", "metadata": REPO / "metadata.yaml", "type": "source", "subtype": "message_queue"},
    "destination-collection": {
        "package": "destination_collection",
        "metadata": REPO / "destination_collection" / "metadata.yaml",
        "type": "destination",
        "subtype": "database",
    },
}


# -- Dockerfile ---------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: Optional[str]
    base: str
    env: Dict[str, str] = field(default_factory=dict)
    labels: Dict[str, str] = field(default_factory=dict)
    users: List[str] = field(default_factory=list)
    entrypoint: Optional[List[str]] = None
    runs: List[str] = field(default_factory=list)
    volumes: List[str] = field(default_factory=list)
    copies: List[str] = field(default_factory=list)


@dataclass
class Dockerfile:
    args: Dict[str, Optional[str]]
    stages: List[Stage]

    def stage(self, name: str) -> Stage:
        matches = [s for s in self.stages if s.name == name]
        assert len(matches) == 1, f"Dockerfile has {len(matches)} stages named {name!r}"
        return matches[0]

    def chain(self, name: str) -> List[Stage]:
        """The stage and the stages it builds on, target first (FROM <stage> inherits ENV, LABEL, USER)."""
        chain = [self.stage(name)]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def resolved(self, name: str) -> Stage:
        """The target's effective settings, as `docker inspect` would show them on the built image."""
        chain = self.chain(name)
        out = Stage(name=name, base=self.substitute(chain[-1].base))
        for stage in reversed(chain):
            out.env.update(stage.env)
            out.labels.update(stage.labels)
            out.users.extend(stage.users)
            out.runs.extend(stage.runs)
            out.volumes.extend(stage.volumes)
            out.copies.extend(stage.copies)
            out.entrypoint = stage.entrypoint if stage.entrypoint is not None else out.entrypoint
        return out

    def substitute(self, text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args.get(m.group(1) or m.group(2)) or "", text)


def _pairs(text: str) -> Dict[str, str]:
    """ENV/LABEL arguments: key=value pairs, values optionally quoted (the legacy `ENV key value` form too)."""
    tokens = shlex.split(text)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


@lru_cache(maxsize=None)
def dockerfile() -> Dockerfile:
    lines: List[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: Dict[str, Optional[str]] = {}
    stages: List[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            if not stages:
                args[name] = default.strip('"') or None
        elif keyword == "FROM":
            parts = rest.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=parts[0]))
        elif not stages:
            continue
        elif keyword == "ENV":
            stages[-1].env.update(_pairs(rest))
        elif keyword == "LABEL":
            stages[-1].labels.update(_pairs(rest))
        elif keyword == "USER":
            stages[-1].users.append(rest)
        elif keyword == "ENTRYPOINT":
            stages[-1].entrypoint = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
        elif keyword == "RUN":
            stages[-1].runs.append(rest)
        elif keyword == "VOLUME":
            stages[-1].volumes.extend(json.loads(rest) if rest.startswith("[") else rest.split())
        elif keyword == "COPY":
            stages[-1].copies.append(rest)
    return Dockerfile(args=args, stages=stages)


# -- setup.py (read with ast: never executed) ---------------------------------------------------------------------


@lru_cache(maxsize=None)
def setup_kwargs() -> Dict[str, object]:
    tree = ast.parse(SETUP_PY.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    pass  # computed values (install_requires, long_description) are not part of this contract
            return out
    raise AssertionError("setup.py has no setup(...) call")


def setup_constant(name: str):
    """A literal module-level constant of setup.py (SCRIPTS, PACKAGES, TARGETS)."""
    for node in ast.parse(SETUP_PY.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no literal {name}")


def console_scripts() -> Dict[str, str]:
    """Every console script a full install (the default target) makes."""
    scripts = [script for part in setup_constant("TARGETS")["all"] for script in setup_constant("SCRIPTS")[part]]
    return dict((s.split("=", 1)[0].strip(), s.split("=", 1)[1].strip()) for s in scripts)


def metadata(connector: str) -> dict:
    return yaml.safe_load(CONNECTORS[connector]["metadata"].read_text())


def spec(connector: str) -> dict:
    return json.loads((REPO / CONNECTORS[connector]["package"] / "spec.json").read_text())


# -- Dockerfile vs setup.py vs metadata ---------------------------------------------------------------------------

connectors = pytest.mark.parametrize("connector", list(CONNECTORS))


@connectors
def test_target_entrypoint_is_the_console_script_and_airbyte_entrypoint(connector):
    image = dockerfile().resolved(connector)
    assert connector in console_scripts(), f"setup.py installs no console script {connector!r}"
    package = CONNECTORS[connector]["package"]
    assert console_scripts()[connector].startswith(f"{package}."), console_scripts()[connector]
    assert image.entrypoint == [connector]
    assert image.env.get("AIRBYTE_ENTRYPOINT") == " ".join(image.entrypoint)


@connectors
def test_console_script_target_is_importable_and_callable(connector):
    module, _, function = console_scripts()[connector].partition(":")
    imported = __import__(module, fromlist=[function])
    assert callable(getattr(imported, function))


@connectors
def test_target_runs_as_non_root_user(connector):
    image = dockerfile().resolved(connector)
    assert image.users, f"target {connector} sets no USER"
    assert image.users[-1] not in ("root", "0", "0:0"), f"target {connector} runs as {image.users[-1]}"
    assert image.users[-1] == "airbyte"  # the base image's user (uid 1000), as Airbyte's Python connectors use


@connectors
def test_labels_match_metadata(connector):
    image = dockerfile().resolved(connector)
    data = metadata(connector)["data"]
    assert image.labels.get("io.airbyte.name") == data["dockerRepository"] == f"airbyte/{connector}"
    assert image.labels.get("io.airbyte.version") == data["dockerImageTag"]


@connectors
def test_base_image_matches_metadata(connector):
    image = dockerfile().resolved(connector)
    base = metadata(connector)["data"]["connectorBuildOptions"]["baseImage"]
    assert image.base == base
    assert re.fullmatch(r"docker\.io/airbyte/python-connector-base:\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", base), base


@connectors
def test_each_image_installs_only_its_connector_with_setup_pys_target(connector):
    """Lean images: each target copies and installs its own package alone (KINESIS_COLLECTIONS_TARGET), so the
    source's image has no duckdb/pyarrow/psycopg and neither has the runner (integration_tests/test_lean_installs.py
    installs the same sets into fresh venvs)."""
    image = dockerfile().resolved(connector)
    target = {"source-kinesis": "source", "destination-collection": "destination"}[connector]
    own = CONNECTORS[connector]["package"]
    other = {"source_kinesis": "destination_collection", "destination_collection": "source_kinesis"}[own]
    copied = " ".join(image.copies)
    assert "setup.py" in copied and own in copied, f"the {connector} image does not COPY setup.py and {own}"
    assert other not in copied and "collection_runner" not in copied, f"the {connector} image copies {other}"
    assert any(re.search(rf"KINESIS_COLLECTIONS_TARGET={target} pip install .*\s\.(\s|$)", run) for run in image.runs)
    assert target in setup_constant("TARGETS") and setup_constant("TARGETS")[target] == [target]
    assert [s.split("=")[0] for s in setup_constant("SCRIPTS")[target]] == [connector]


def test_destination_target_has_local_and_the_in_docker_variable():
    from destination_collection.config import DEFAULT_LOCAL_ROOT, IN_DOCKER_ENV

    image = dockerfile().resolved("destination-collection")
    assert DEFAULT_LOCAL_ROOT == "/local"
    assert image.env.get(IN_DOCKER_ENV) == "1"
    assert "/local" in image.volumes
    assert any("mkdir -p /local" in run and "chown airbyte" in run and "/local" in run.split("chown", 1)[1] for run in image.runs), (
        "/local must exist and belong to the airbyte user, who runs the destination"
    )
    # the source image must not think it is the destination
    assert IN_DOCKER_ENV not in dockerfile().resolved("source-kinesis").env


def test_every_target_is_a_connector():
    named = {s.name for s in dockerfile().stages if s.name}
    assert set(CONNECTORS) <= named
    assert named - set(CONNECTORS) <= {"base"}, f"unexpected targets: {named - set(CONNECTORS)}"


# -- metadata.yaml ------------------------------------------------------------------------------------------------

# Fields the registry model leaves optional that a listed connector needs (the model checks every field's shape).
REQUIRED_METADATA = (
    "name", "definitionId", "connectorType", "connectorSubtype", "dockerRepository", "dockerImageTag",
    "documentationUrl", "githubIssueLabel", "license", "releaseStage", "releaseDate", "supportLevel", "tags",
    "connectorBuildOptions", "allowedHosts", "registryOverrides", "resourceRequirements", "remoteRegistries",
)


@connectors
def test_metadata_validates_against_airbytes_published_metadata_model(connector):
    """Airbyte's own model of metadata.yaml (PyPI airbyte-connector-models, ConnectorMetadataDefinitionV0: extra
    fields forbidden, enums, shapes), plus the fields a registry listing needs."""
    from airbyte_connector_models.metadata.v0.connector_metadata_definition_v0 import ConnectorMetadataDefinitionV0

    raw = metadata(connector)
    model = ConnectorMetadataDefinitionV0.model_validate(raw)
    assert model.metadata_spec_version == "1.0"
    missing = [field for field in REQUIRED_METADATA if field not in raw["data"]]
    assert not missing, f"{connector} metadata.yaml lacks {missing}"
    assert re.fullmatch(r"airbyte/(source|destination)-[a-z0-9-]+", raw["data"]["dockerRepository"])


@connectors
def test_metadata_registry_listing_resources_and_pypi(connector):
    data = metadata(connector)["data"]
    # neither runs on Airbyte Cloud yet (the source: Cloud's credential model; the destination: no /local there)
    assert data["registryOverrides"]["cloud"]["enabled"] is False and data["registryOverrides"]["oss"]["enabled"]
    sync = [j for j in data["resourceRequirements"]["jobSpecific"] if j["jobType"] == "sync"]
    assert len(sync) == 1 and {"memory_request", "memory_limit"} <= set(sync[0]["resourceRequirements"])
    pypi = data["remoteRegistries"]["pypi"]
    assert pypi["packageName"] == setup_kwargs()["name"], "PyPI package name and the distribution setup.py builds differ"


@connectors
def test_each_connector_has_an_svg_icon_beside_its_metadata(connector):
    import xml.etree.ElementTree as ElementTree

    root = ElementTree.parse(CONNECTORS[connector]["metadata"].parent / "icon.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")


@connectors
def test_metadata_identity(connector):
    data = metadata(connector)["data"]
    assert uuid.UUID(data["definitionId"]).version == 4
    assert str(uuid.UUID(data["definitionId"])) == data["definitionId"]  # canonical lower-case form
    assert data["connectorType"] == CONNECTORS[connector]["type"]
    assert data["connectorSubtype"] == CONNECTORS[connector]["subtype"]
    assert data["githubIssueLabel"] == connector
    assert "language:python" in data["tags"] and "cdk:python" in data["tags"]
    assert data["dockerImageTag"] == setup_kwargs()["version"], "image tag and package version diverge"


def test_definition_ids_differ():
    assert metadata("source-kinesis")["data"]["definitionId"] != metadata("destination-collection")["data"]["definitionId"]


@connectors
def test_documentation_url_points_at_this_connectors_doc_page(connector):
    url = metadata(connector)["data"]["documentationUrl"]
    match = re.fullmatch(r"https://github\.com/[^/]+/[^/]+/blob/main/(docs/[\w.-]+\.md)", url)
    assert match, url
    assert (REPO / match.group(1)).is_file()
    assert match.group(1) == f"docs/{connector}.md"


@pytest.mark.parametrize("connector", ["source-kinesis", "destination-collection"])
def test_spec_documentation_url_equals_metadata(connector):
    assert spec(connector)["documentationUrl"] == metadata(connector)["data"]["documentationUrl"]


def test_supports_refreshes_agrees_with_the_destination_spec():
    data = metadata("destination-collection")["data"]
    assert data.get("supportsRefreshes") is True  # generations.py truncates after STREAM_STATUS COMPLETE (tested)
    assert spec("destination-collection").get("supportsRefreshes") is True
    assert "supportsRefreshes" not in metadata("source-kinesis")["data"]


def _allowed(host: str, region: str, patterns: List[str]) -> bool:
    for pattern in patterns:
        pattern = pattern.replace("${region}", region)
        if "${" in pattern:
            continue  # other config interpolations (endpoint_url) are per-connection
        if fnmatch.fnmatchcase(host, pattern):
            return True
    return False


class _Sent(Exception):
    pass


def _hosts_for(service: str, region: str, calls) -> List[str]:
    """The hosts boto3 sends these calls to (the request is stopped before it leaves the process)."""
    import boto3

    client = boto3.client(service, region_name=region, aws_access_key_id="AKIACONTRACTTEST0000", aws_secret_access_key="contract-test-not-a-secret")
    hosts: List[str] = []

    def stop(request, **_):
        hosts.append(re.sub(r"^https?://([^/:]+).*$", r"\1", request.url))
        raise _Sent()

    client.meta.events.register("before-send", stop)
    for operation, params in calls:
        with pytest.raises(_Sent):
            getattr(client, operation)(**params)
    return hosts


@pytest.mark.parametrize(
    "region,partition",
    [("us-east-1", "aws"), ("eu-central-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_source_allowed_hosts_cover_every_aws_endpoint_it_calls(region, partition):
    """By name and by ARN (botocore sends ARN calls to <account>.control-kinesis / <account>.data-kinesis hosts),
    and STS for the IAM-role option; otherwise Airbyte Cloud's network policy blocks the sync."""
    patterns = metadata("source-kinesis")["data"]["allowedHosts"]["hosts"]
    arn = f"arn:{partition}:kinesis:{region}:123456789012:stream/orders"
    calls = []
    for ref in ({"StreamName": "orders"}, {"StreamARN": arn}):
        calls += [
            ("describe_stream", dict(ref)),
            ("list_shards", dict(ref)),
            ("get_shard_iterator", dict(ref, ShardId="shardId-000000000000", ShardIteratorType="LATEST")),
        ]
    calls += [("get_records", {"ShardIterator": "AAAA"}), ("get_records", {"ShardIterator": "AAAA", "StreamARN": arn}), ("list_streams", {})]
    hosts = _hosts_for("kinesis", region, calls)
    hosts += _hosts_for("sts", region, [("assume_role", {"RoleArn": f"arn:{partition}:iam::123456789012:role/r", "RoleSessionName": "airbyte-source-kinesis"})])
    denied = sorted({h for h in hosts if not _allowed(h, region, patterns)})
    assert not denied, f"allowedHosts does not cover {denied}"
    assert "${endpoint_url}" in patterns  # VPC endpoints and emulators configured as Endpoint URL


def test_destination_allowed_hosts_cover_the_postgres_host():
    hosts = metadata("destination-collection")["data"]["allowedHosts"]["hosts"]
    store = next(o for o in spec("destination-collection")["connectionSpecification"]["properties"]["store"]["oneOf"] if "host" in o["properties"])
    assert "host" in store["properties"] and "${store.host}" in hosts
    # the SSH tunnel's jump server is the host the connector dials when a tunnel is configured
    tunnels = [o for o in store["properties"]["tunnel_method"]["oneOf"] if o["properties"]["tunnel_method"]["const"] != "NO_TUNNEL"]
    assert tunnels and all("tunnel_host" in o["properties"] for o in tunnels)
    assert "${store.tunnel_method.tunnel_host}" in hosts


# -- setup.py package data ----------------------------------------------------------------------------------------


@connectors
def test_spec_and_schemas_ship_as_package_data(connector):
    package = CONNECTORS[connector]["package"]
    patterns = setup_kwargs()["package_data"][package]
    shipped = {p.relative_to(REPO / package).as_posix() for pattern in patterns for p in (REPO / package).glob(pattern)}
    assert "spec.json" in shipped
    if connector == "source-kinesis":
        schemas = {p.relative_to(REPO / package).as_posix() for p in (REPO / package / "schemas").glob("*.json")}
        assert schemas and schemas <= shipped


# -- the console scripts, as the image runs them ------------------------------------------------------------------

SECRET = "contract-test-secret-value-0001"
BAD_CONFIGS = {
    # passes the spec, fails the connector's own validation: the path a real check takes
    "source-kinesis": {
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIACONTRACTTEST0001", "aws_secret_access_key": SECRET},
        "region": "us-east-1",
        "streams": ["orders"],
        "start_position": {"position": "AT_TIMESTAMP", "timestamp": "2999-01-01T00:00:00Z"},  # in the future
    },
    # in the image, a DuckDB path may not leave /local
    "destination-collection": {"store": {"store_type": "duckdb", "path": "../outside.duckdb"}},
}
# a PostgreSQL store nobody listens on (port 9, loopback): fails fast, and its password must not be printed
UNREACHABLE_POSTGRES = {
    "store": {"store_type": "postgres", "host": "127.0.0.1", "port": 9, "database": "d", "username": "u", "password": SECRET, "ssl_mode": "disable"}
}


def _script(name: str) -> str:
    """The console script of this environment (next to the interpreter, as pip installs it; PATH otherwise)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which(name)
    assert found, f"console script {name} is not installed (pip install -e .)"
    return found


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """spec and a bad-config check per connector, plus a good DuckDB check and an unreachable PostgreSQL check: six
    CLI starts (about 2 s each) run concurrently, each
    with the target's ENV from the Dockerfile, from a working directory outside the checkout."""
    work = tmp_path_factory.mktemp("image")
    local = work / "local"
    local.mkdir()
    jobs = {}
    for connector in CONNECTORS:
        env = dict(os.environ)
        env.update(dockerfile().resolved(connector).env)
        env["DESTINATION_COLLECTION_LOCAL_ROOT"] = str(local)  # stands in for the image's /local
        bad = work / f"{connector}-bad.json"
        bad.write_text(json.dumps(BAD_CONFIGS[connector]))
        argv = {"spec": ["spec"], "check-bad": ["check", "--config", str(bad)]}
        if connector == "destination-collection":
            good = work / "destination-good.json"
            good.write_text(json.dumps({"store": {"store_type": "duckdb", "path": "contract.duckdb"}}))
            argv["check-good"] = ["check", "--config", str(good)]
            unreachable = work / "destination-unreachable.json"
            unreachable.write_text(json.dumps(UNREACHABLE_POSTGRES))
            argv["check-secret"] = ["check", "--config", str(unreachable)]
        for label, args in argv.items():
            jobs[(connector, label)] = subprocess.Popen(
                [_script(connector), *args], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
    results = {}
    for key, proc in jobs.items():
        out, err = proc.communicate(timeout=120)
        messages = []
        for line in out.splitlines():
            try:
                messages.append(json.loads(line))
            except ValueError:
                pass
        results[key] = {"rc": proc.returncode, "stdout": out, "stderr": err, "messages": messages}
    results["local"] = local
    return results


def _of_type(run, kind):
    return [m for m in run["messages"] if m.get("type") == kind]


@connectors
def test_cli_spec_as_in_the_image(cli_runs, connector):
    run = cli_runs[(connector, "spec")]
    assert run["rc"] == 0, run["stderr"][-2000:]
    specs = _of_type(run, "SPEC")
    assert len(specs) == 1
    assert specs[0]["spec"]["connectionSpecification"] == spec(connector)["connectionSpecification"]
    if connector == "destination-collection":
        assert set(specs[0]["spec"]["supported_destination_sync_modes"]) == {"append", "overwrite", "append_dedup"}


@connectors
def test_cli_check_with_bad_config_fails_cleanly(cli_runs, connector):
    run = cli_runs[(connector, "check-bad")]
    assert run["rc"] == 0, run["stderr"][-2000:]
    statuses = _of_type(run, "CONNECTION_STATUS")
    assert len(statuses) == 1 and statuses[0]["connectionStatus"]["status"] == "FAILED", run["stdout"][-2000:]
    message = statuses[0]["connectionStatus"]["message"]
    expected = {"source-kinesis": "start_position timestamp", "destination-collection": "/local"}[connector]
    assert expected in message, message


@pytest.mark.parametrize("key", [("source-kinesis", "check-bad"), ("destination-collection", "check-secret")])
def test_cli_check_failure_never_prints_the_secret(cli_runs, key):
    run = cli_runs[key]
    assert run["rc"] == 0, run["stderr"][-2000:]
    assert [s["connectionStatus"]["status"] for s in _of_type(run, "CONNECTION_STATUS")] == ["FAILED"], run["stdout"][-2000:]
    assert SECRET not in run["stdout"] + run["stderr"]


def test_cli_destination_check_writes_under_local(cli_runs):
    run = cli_runs[("destination-collection", "check-good")]
    assert run["rc"] == 0, run["stderr"][-2000:]
    statuses = _of_type(run, "CONNECTION_STATUS")
    assert [s["connectionStatus"]["status"] for s in statuses] == ["SUCCEEDED"], run["stdout"][-2000:]
    assert (cli_runs["local"] / "contract.duckdb").exists()


# -- docs cover every option --------------------------------------------------------------------------------------


def _spec_options(node: dict, path: str = ""):
    for key, prop in (node.get("properties") or {}).items():
        if key in ("auth_type", "store_type"):  # oneOf discriminators: documented by their option's title
            continue
        yield f"{path}{key}", prop
        yield from _spec_options(prop, f"{path}{key}.")
        for option in prop.get("oneOf", []):
            yield from _spec_options(option, f"{path}{key}.")
        if isinstance(prop.get("items"), dict):
            yield from _spec_options(prop["items"], f"{path}{key}[].")


@connectors
def test_connector_doc_covers_every_spec_option(connector):
    """Each option appears in docs/<connector>.md by its UI title (what users see) or its config key."""
    doc = (REPO / "docs" / f"{connector}.md").read_text()
    missing = []
    for path, prop in _spec_options(spec(connector)["connectionSpecification"]):
        title = re.sub(r"\s*\((seconds|recommended|deprecated)\)$", "", prop.get("title") or "")
        key = path.rsplit(".", 1)[-1].replace("[]", "")
        if not ((title and title in doc) or f"`{key}`" in doc or re.search(rf"\b{re.escape(key)}\b", doc)):
            missing.append(path)
    assert not missing, f"docs/{connector}.md does not mention: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (except - and _), spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_doc_links_resolve(page):
    """Relative links between the docs pages point at existing pages and headings."""
    text = (REPO / "docs" / page).read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / "docs" / path) if path else REPO / "docs" / page
        if not file.is_file():
            broken.append(target)
            continue
        if anchor:
            headings = {_slug(h) for h in re.findall(r"^#+\s+(.*)$", file.read_text(), flags=re.M)}
            if anchor not in headings:
                broken.append(target)
    assert not broken, f"docs/{page}: broken links {broken}"


# -- spec.json as Airbyte's registry and UI expect ----------------------------------------------------------------
def _spec_fields(node: dict, path: str = ""):
    """(path, field schema) of every property, in objects, oneOf options and array items."""
    for name, field_schema in (node.get("properties") or {}).items():
        if isinstance(field_schema, dict):
            yield f"{path}.{name}", field_schema
            yield from _spec_fields(field_schema, f"{path}.{name}")
    for index, option in enumerate(node.get("oneOf") or ()):
        yield from _spec_fields(option, f"{path}[{index}]")
    if isinstance(node.get("items"), dict):
        yield from _spec_fields(node["items"], f"{path}[]")


@connectors
def test_every_spec_field_is_described_and_every_pattern_has_a_descriptor(connector):
    fields = list(_spec_fields(spec(connector)["connectionSpecification"]))
    assert fields
    assert [path for path, schema in fields if not schema.get("description")] == []
    assert [path for path, schema in fields if "pattern" in schema and not schema.get("pattern_descriptor")] == []


def test_source_spec_groups_every_field_into_one_of_its_declared_groups():
    specification = spec("source-kinesis")["connectionSpecification"]
    declared = [group["id"] for group in specification["groups"]]
    assert len(declared) == len(set(declared)) and all(group.get("title") for group in specification["groups"])
    used = {name: field_schema.get("group") for name, field_schema in specification["properties"].items()}
    assert [name for name, group in used.items() if group not in declared] == []
    assert set(used.values()) == set(declared)  # no empty group
