"""The failures the pipeline tells apart, because each calls for a different response.

Only this light module is imported by DAG files (for the retry policy); network faults are not
listed here: they fall through to Airflow's standard retries with exponential backoff.
"""

from __future__ import annotations


class MigrationError(Exception):
    """A failure that retrying cannot fix; the message says what to do next.

    The location (domain, table, partition, object) is also kept as attributes, for alerts: the
    message starts with the same location, written by ``where()``.
    """

    def __init__(
        self,
        message: str,
        *,
        domain: str | None = None,
        table: str | None = None,
        partition: str | None = None,
        obj: str | None = None,
    ):
        super().__init__(message)
        self.domain = domain
        self.table = table
        self.partition = partition
        self.obj = obj

    def location(self) -> dict[str, str]:
        """Where it failed: the attributes given, else the ``where()`` prefix of the message."""
        given = {"domain": self.domain, "table": self.table, "partition": self.partition, "object": self.obj}
        if any(given.values()):
            return {k: v for k, v in given.items() if v}
        return parse_where(str(self))


class ConfigurationError(MigrationError):
    """The project's own configuration is wrong (the catalogue, a schema file, a suite): retrying the same
    files cannot help. The message names the file and the setting to fix."""


class DataError(MigrationError):
    """The source data breaks a rule (format, schema, expectation, key, count, checksum)."""


class StructuralError(DataError):
    """One source object cannot be read as the table's schema says: its partition is quarantined.

    ``expectation`` names the broken rule in GX's vocabulary, so the report reads like the suite's.
    Its message is the package's own: never the text of a library exception, which may quote a value.
    """

    def __init__(self, message: str, expectation: str, **kwargs):
        super().__init__(message)
        self.expectation = expectation
        self.kwargs = kwargs


class QuarantinedError(DataError):
    """The partition failed expectations: it is quarantined, with a redacted report, and not promoted."""


class PrivacyIncident(QuarantinedError):
    """A raw NIR was found: a privacy incident. Never retried, never waivable, alerted apart."""

    severity = "privacy"


class IntegrityError(DataError):
    """What landed in the sovereign store is not provably equal to what left Azure."""


class MissingPartitionError(DataError):
    """A planned partition has no source objects in Azure."""


class SovereigntyError(MigrationError):
    """The target is not an allowed sovereign host; no byte was moved."""


class PartitionLeaseLost(MigrationError):
    """Another run took the partition's write lease (this run's had expired): this run stops writing."""


class FrozenDomainError(MigrationError):
    """The domain is cut over: the French copy is the data, and writes are refused."""


class StateTransitionError(MigrationError):
    """The ledger refused a state change its transition table does not allow (``states.py``): another run
    or an operator moved the partition or domain meanwhile, or a bug. Never retried: look first."""


class PartitionBusyError(Exception):
    """Another run holds the partition's write lease: retried with backoff, like a network fault."""


def where(domain: str, table: str | None = None, partition: str | None = None, obj: str | None = None) -> str:
    """The location prefix every error message starts with."""
    parts = [f"domain={domain}"]
    if table:
        parts.append(f"table={table}")
    if partition:
        parts.append(f"partition={partition}")
    if obj:
        parts.append(f"object={obj}")
    return " ".join(parts)


_WHERE_KEYS = ("domain", "table", "partition", "object")


def parse_where(message: str) -> dict[str, str]:
    """The location a ``where()`` prefix names in a message (the first one, after an optional label)."""
    found: dict[str, str] = {}
    for token in message.split(":", 1)[0].split():
        key, sep, value = token.partition("=")
        if sep and key in _WHERE_KEYS and value and key not in found:
            found[key] = value
    return found if "domain" in found else {}
