"""The sources: list a partition's objects and stream them in ranges.

Two kinds, one interface (``list_objects``, ``download_to``, ``read_range``, ``list_folders``,
``current``, ``sha256``, ``delete``), chosen per domain by the catalogue (``source:``, see
``catalogue.SourceSpec``) through ``open_source``:

- ``AzureSource``: Azure Blob through the microsoft-azure provider's WasbHook (the default);
- ``S3Source``: any S3-compatible store through the amazon provider's S3Hook, built and guarded
  exactly as the target is (``target.SovereignTarget``: the sovereignty guard checks the source
  connection, its endpoint and every request), so a second move starts from a sovereign host.

Every ranged read is conditional on the ETag seen when listing, so an object that changes while it
is being read fails loudly instead of mixing two versions. Listings paginate (the SDKs' pagers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceObject:
    name: str
    size: int
    etag: str
    last_modified: str

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_blob(cls, name: str, properties) -> SourceObject:
        """An Azure blob as listed or read (``BlobProperties``): its ETag without the quotes."""
        return cls(name, properties.size, properties.etag.strip('"'), properties.last_modified.isoformat())


def open_source(catalogue, domain_name: str | None = None):
    """The source of ``domain_name`` as the catalogue declares it; without a domain, the default Azure container
    (a new client: ``resources.open_source`` keeps one per process and connection)."""
    from hdh_migration.catalogue import SourceSpec

    spec = catalogue.domain(domain_name).source if domain_name else SourceSpec(container=catalogue.source_container)
    return build_source(spec, catalogue.source_container, catalogue.target_eea_regions, catalogue.target_ca_bundle)


def build_source(spec, default_container: str, eea_regions, ca_bundle: str | None):
    """The source a ``catalogue.SourceSpec`` names; an S3 one is guarded as the target is (same EEA regions, CA)."""
    if spec.kind == "s3":
        return S3Source(spec.conn_id, spec.bucket, spec.prefix, eea_regions, ca_bundle)
    return AzureSource(spec.conn_id, spec.container or default_container)


def _spool_ranges(range_chunks, size: int, path: Path, chunk_size: int, digest, progress, throttle) -> None:
    """Write an object of ``size`` bytes into ``path`` range by range (``range_chunks(offset, length)``
    yields a range's bytes), feeding ``digest``; the throttle is paid before each range, ``progress``
    called once it is on disk (flushed)."""
    if throttle is not None:
        chunk_size = throttle.chunk_size(chunk_size)
    with open(path, "wb") as spool:
        offset = 0
        while offset < size:
            length = min(chunk_size, size - offset)
            if throttle is not None:
                throttle.acquire(length)
            for chunk in range_chunks(offset, length):
                digest.update(chunk)
                spool.write(chunk)
            offset += length
            if progress:
                spool.flush()
                progress(length)


def _hash_chunks(chunks) -> str:
    from hdh_migration.integrity import sha256_stream

    digest = sha256_stream()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class AzureSource:
    kind = "azure"

    def __init__(self, conn_id: str, container: str):
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        self.hook = WasbHook(wasb_conn_id=conn_id)
        self.service = self.hook.get_conn()
        self.container = container
        self.container_client = self.service.get_container_client(container)

    def list_folders(self, prefix: str) -> list[str]:
        """The folders one level under ``prefix``, each ending with '/': one delimited listing, not every blob."""
        from azure.core.exceptions import ResourceNotFoundError

        from hdh_migration.errors import MigrationError

        try:
            items = self.container_client.walk_blobs(name_starts_with=prefix, delimiter="/")
            return [item.name for item in items if item.name.endswith("/")]
        except ResourceNotFoundError:
            raise MigrationError(
                f"the source container {self.container} does not exist in Azure (listing {prefix}). Check the "
                "source connection and the catalogue's source_container"
            ) from None

    def current(self, name: str) -> SourceObject | None:
        """The object as it is now (size, ETag), or None when it is gone."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.container_client.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return SourceObject.from_blob(name, props)

    def sha256(self, obj: SourceObject) -> str:
        """The object's sha256, streamed, conditional on its ETag."""
        from azure.core import MatchConditions

        blob = self.container_client.get_blob_client(obj.name)
        stream = blob.download_blob(etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified)
        return _hash_chunks(stream.chunks())

    def delete(self, obj: SourceObject) -> None:
        """Delete the object only if it is still the one of ETag ``obj.etag`` (Azure checks it atomically)."""
        from azure.core import MatchConditions

        self.container_client.get_blob_client(obj.name).delete_blob(
            etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified
        )

    def list_objects(self, prefix: str, extension: str) -> list[SourceObject]:
        """The partition's data objects, sorted by name (markers and other files are ignored)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blobs = list(self.container_client.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []
        return sorted(
            (
                SourceObject.from_blob(blob.name, blob)
                for blob in blobs
                if blob.name.endswith(f".{extension}") and "/" not in blob.name[len(prefix) :]
            ),
            key=lambda obj: obj.name,
        )

    def first_objects(self, limit: int = 100) -> list[SourceObject]:
        """The first objects of the container's listing (one page at most): a probe, not a partition."""
        page = next(iter(self.container_client.list_blobs(results_per_page=limit).by_page()), [])
        return [SourceObject.from_blob(blob.name, blob) for blob in list(page)[:limit]]

    def download_to(self, obj: SourceObject, path: Path, chunk_size: int, digest, progress=None, throttle=None) -> None:
        """Stream one object into a local spool file in ranges, feeding the digest as bytes arrive.

        ``throttle`` (a ``throttle.TokenBucket``) is paid before each range is requested. ``progress``
        is called once a range is on disk (flushed), so a reader of the spool file may follow it.
        """
        from azure.core import MatchConditions

        blob = self.container_client.get_blob_client(obj.name)

        def range_chunks(offset: int, length: int):
            return blob.download_blob(
                offset=offset, length=length, etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified
            ).chunks()

        _spool_ranges(range_chunks, obj.size, path, chunk_size, digest, progress, throttle)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """A few bytes of one object (a parquet footer), conditional on the ETag seen when listing."""
        from azure.core import MatchConditions

        blob = self.container_client.get_blob_client(obj.name)
        stream = blob.download_blob(
            offset=offset, length=length, etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified
        )
        return stream.readall()


class S3Source:
    """An S3-compatible source (the interim French host of a second move), reached and guarded as the target is."""

    kind = "s3"

    def __init__(self, conn_id: str, bucket: str, prefix: str = "", eea_regions=(), ca_bundle: str | None = None):
        from hdh_migration.target import SovereignTarget

        # The sovereignty guard (connection, endpoint, built client, every request) runs here, before any socket.
        self.store = SovereignTarget(conn_id, bucket, tuple(eea_regions), ca_bundle)
        self.client, self.bucket, self.prefix = self.store.client, bucket, prefix

    def _pages(self, prefix: str):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])

    def list_objects(self, prefix: str, extension: str) -> list[SourceObject]:
        """The partition's data objects under ``<source prefix><prefix>``, sorted by key (every page of the listing)."""
        full = self.prefix + prefix
        return sorted(
            (
                SourceObject(
                    name=item["Key"],
                    size=item["Size"],
                    etag=item["ETag"].strip('"'),
                    last_modified=item["LastModified"].isoformat(),
                )
                for item in self._pages(full)
                if item["Key"].endswith(f".{extension}") and "/" not in item["Key"][len(full) :]
            ),
            key=lambda obj: obj.name,
        )

    def list_folders(self, prefix: str) -> list[str]:
        """The folders one level under ``prefix``, each ending with '/' (without the source's own key
        prefix): one delimited listing, every page, not every key."""
        paginator = self.client.get_paginator("list_objects_v2")
        folders = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"):
            folders.extend(common["Prefix"][len(self.prefix) :] for common in page.get("CommonPrefixes", []))
        return folders

    def _get(self, obj: SourceObject, **kwargs):
        return self.client.get_object(Bucket=self.bucket, Key=obj.name, IfMatch=f'"{obj.etag}"', **kwargs)["Body"]

    def download_to(self, obj: SourceObject, path: Path, chunk_size: int, digest, progress=None, throttle=None) -> None:
        """As ``AzureSource.download_to``: ranged reads, each conditional on the listed ETag (``If-Match``)."""

        def range_chunks(offset: int, length: int):
            return self._get(obj, Range=f"bytes={offset}-{offset + length - 1}").iter_chunks(1024 * 1024)

        _spool_ranges(range_chunks, obj.size, path, chunk_size, digest, progress, throttle)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        return self._get(obj, Range=f"bytes={offset}-{offset + length - 1}").read()

    def current(self, name: str) -> SourceObject | None:
        head = self.store.head(name)
        if head is None:
            return None
        return SourceObject(name, head["ContentLength"], head["ETag"].strip('"'), head["LastModified"].isoformat())

    def sha256(self, obj: SourceObject) -> str:
        return _hash_chunks(self._get(obj).iter_chunks(1024 * 1024))

    def delete(self, obj: SourceObject) -> None:
        """Delete the object only if it is still the one of ETag ``obj.etag``: checked just before the delete
        (S3 stores do not all honour a conditional DeleteObject)."""
        now = self.current(obj.name)
        if now is None:
            return
        if now.etag != obj.etag:
            raise ChangedSourceObject(obj.name)
        self.client.delete_object(Bucket=self.bucket, Key=obj.name)


class ChangedSourceObject(Exception):  # noqa: N818 - a condition, named as the decommission reports it
    """An object differs from the one recorded (its name is the message: never a data value)."""


def partitions_in(source, table) -> set[str]:
    """The partition values of one table present in a source (either kind): one delimited listing of the
    table's folder (its partition folders), or for a yearly family of the domain's (one table per year)."""
    folders = source.list_folders(table.source_listing_prefix())
    return {value for folder in folders if (value := table.source_partition(folder)) is not None}
