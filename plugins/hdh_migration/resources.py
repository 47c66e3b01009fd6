"""The package's resources, one public home: the catalogue, the ledger, the sovereign target, the Azure source.

Every module that needs one of them asks here. The target keeps one S3 client per process and
connection (a client is thread-safe, and building one, with its S3Hook, its guard and its
profile's handlers, costs more than most requests): a transfer of 20 objects in one process
builds it once, not 20 times. A connection changed in the environment (``AIRFLOW_CONN_*``, as
the tests do) or another bucket gets a client of its own.
"""

from __future__ import annotations

import functools
import os
import threading

from hdh_migration.catalogue import DEFAULT_SOURCE_CONN_ID, Catalogue, cached_catalogue

SOURCE_CONN_ID = DEFAULT_SOURCE_CONN_ID
TARGET_CONN_ID = "hdh_sovereign_target"
LEDGER_CONN_ID = "hdh_ledger"
CATALOGUE_SETTING = "HDH_CATALOGUE"


def current_catalogue() -> Catalogue:
    """The catalogue named by ``HDH_CATALOGUE`` (the project's dags/domains.yaml by default), cached."""
    return cached_catalogue(os.environ.get(CATALOGUE_SETTING))


def open_ledger():
    from hdh_migration.ledger import Ledger

    return Ledger.from_connection(LEDGER_CONN_ID)


_clients_lock = threading.Lock()


def _definition(conn_id: str) -> tuple[str | None, str | None]:
    """What a cached client depends on beyond its arguments: the connection as the environment defines it
    (``AIRFLOW_CONN_*``) and the guard's local stand-in setting; either changed, the guard checks a new client."""
    from hdh_migration.target import LOCAL_STANDINS_ENV

    return os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"), os.environ.get(LOCAL_STANDINS_ENV)


def open_target():
    """The catalogue's bucket of the sovereign target, on this process's one client for its connection."""
    catalogue = current_catalogue()
    defined = _definition(TARGET_CONN_ID)
    with _clients_lock:
        return _target(
            TARGET_CONN_ID,
            catalogue.target_bucket,
            tuple(catalogue.target_eea_regions),
            catalogue.target_ca_bundle,
            defined,
        )


@functools.lru_cache(maxsize=8)
def _target(conn_id: str, bucket: str, eea_regions: tuple, ca_bundle: str | None, _defined: tuple):
    from hdh_migration.target import SovereignTarget

    return SovereignTarget(conn_id, bucket, eea_regions, ca_bundle)


def open_source(domain_name: str | None = None):
    """A domain's source as the catalogue declares it (Azure, or an S3 store for a second move), on this
    process's one client per connection and container or bucket; without a domain, the catalogue's
    Azure container."""
    from hdh_migration.catalogue import SourceSpec

    catalogue = current_catalogue()
    spec = catalogue.domain(domain_name).source if domain_name else SourceSpec(container=catalogue.source_container)
    defined = _definition(spec.conn_id)
    with _clients_lock:
        return _source(
            spec, catalogue.source_container, tuple(catalogue.target_eea_regions), catalogue.target_ca_bundle, defined
        )


@functools.lru_cache(maxsize=16)
def _source(spec, container: str, eea_regions: tuple, ca_bundle: str | None, _defined: tuple):
    from hdh_migration.source import build_source

    return build_source(spec, container, list(eea_regions), ca_bundle)
