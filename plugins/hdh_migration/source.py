"""The Azure source: list a partition's blobs and stream them in ranges through the WasbHook.

Every ranged read is conditional on the ETag seen when listing, so an object that changes while it
is being read fails loudly instead of mixing two versions.
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


class AzureSource:
    def __init__(self, conn_id: str, container: str):
        from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

        self.hook = WasbHook(wasb_conn_id=conn_id)
        self.service = self.hook.get_conn()
        self.container = container
        self.container_client = self.service.get_container_client(container)

    def list_objects(self, prefix: str, extension: str) -> list[SourceObject]:
        """The partition's data objects, sorted by name (markers and other files are ignored)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blobs = list(self.container_client.list_blobs(name_starts_with=prefix))
        except ResourceNotFoundError:
            return []
        return sorted(
            (
                SourceObject(
                    name=blob.name,
                    size=blob.size,
                    etag=blob.etag.strip('"'),
                    last_modified=blob.last_modified.isoformat(),
                )
                for blob in blobs
                if blob.name.endswith(f".{extension}") and "/" not in blob.name[len(prefix) :]
            ),
            key=lambda obj: obj.name,
        )

    def download_to(self, obj: SourceObject, path: Path, chunk_size: int, digest, progress=None, throttle=None) -> None:
        """Stream one object into a local spool file in ranges, feeding the digest as bytes arrive.

        ``throttle`` (a ``throttle.TokenBucket``) is paid before each range is requested. ``progress``
        is called once a range is on disk (flushed), so a reader of the spool file may follow it.
        """
        from azure.core import MatchConditions

        blob = self.container_client.get_blob_client(obj.name)
        if throttle is not None:
            chunk_size = throttle.chunk_size(chunk_size)
        with open(path, "wb") as spool:
            offset = 0
            while offset < obj.size:
                length = min(chunk_size, obj.size - offset)
                if throttle is not None:
                    throttle.acquire(length)
                stream = blob.download_blob(
                    offset=offset, length=length, etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified
                )
                for chunk in stream.chunks():
                    digest.update(chunk)
                    spool.write(chunk)
                offset += length
                if progress:
                    spool.flush()
                    progress(length)

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """A few bytes of one object (a parquet footer), conditional on the ETag seen when listing."""
        from azure.core import MatchConditions

        blob = self.container_client.get_blob_client(obj.name)
        stream = blob.download_blob(
            offset=offset, length=length, etag=f'"{obj.etag}"', match_condition=MatchConditions.IfNotModified
        )
        return stream.readall()
