"""The results store on S3-compatible object storage, through boto3.

boto3 rather than obstore: it is the reference client of the S3 protocol that every
S3-compatible server (AWS S3, MinIO, R2, GCS's XML interoperability API) is tested
against; it presigns GET and PUT URLs for any endpoint with SigV4, sends S3's conditional
write (`If-None-Match: *`) that makes a key write-once on the server itself, and is typed
end to end by its published stubs. obstore is faster per request, but a copy costs one
request per image next to a download and a decode, and its S3 surface is narrower.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from farmdomain.errors import ResultsStoreConflict, ResultsStoreError, ResultsStoreUnavailable
from imagestore.protocol import StoredObject

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    """Images as objects under `prefix` in `bucket`; URLs are presigned."""

    kind = "s3"

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def _name(self, key: str) -> str:
        return self.prefix + key

    def put(self, key: str, data: bytes, content_type: str, sha256: str) -> bool:
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._name(key),
                Body=data,
                ContentType=content_type,
                Metadata={"sha256": sha256},
                # the server refuses the write if the key exists: written once, even by racers
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "412"):
                raise _unavailable(key, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(key, exc) from exc
        else:
            return True
        found = self.head(key)
        if found is None or found.sha256 != sha256:
            raise ResultsStoreConflict(key, "conflict", "the key holds other bytes")
        return False

    def head(self, key: str) -> StoredObject | None:
        try:
            found = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise _unavailable(key, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(key, exc) from exc
        return StoredObject(
            key,
            int(found["ContentLength"]),
            found.get("Metadata", {}).get("sha256", ""),
            found.get("ContentType", "application/octet-stream"),
        )

    def get(self, key: str) -> bytes:
        try:
            found = self._client.get_object(Bucket=self.bucket, Key=self._name(key))
            return found["Body"].read()
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ResultsStoreError(key, "missing", "no image under this key") from exc
            raise _unavailable(key, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(key, exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._name(key))
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(key, exc) from exc

    def url(self, key: str, expires_s: int) -> str:
        return self._presigned("get_object", {"Key": self._name(key)}, expires_s)

    def upload_url(self, key: str, content_type: str, expires_s: int) -> str | None:
        params = {"Key": self._name(key), "ContentType": content_type}
        return self._presigned("put_object", params, expires_s)

    def _presigned(self, operation: str, params: dict[str, Any], expires_s: int) -> str:
        # signed locally: no request reaches the server
        return self._client.generate_presigned_url(
            operation, Params={"Bucket": self.bucket, **params}, ExpiresIn=expires_s
        )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unavailable(key: str, exc: Exception) -> ResultsStoreUnavailable:
    reason = f"s3_{_code(exc)}" if isinstance(exc, ClientError) else "s3_connection"
    return ResultsStoreUnavailable(key, reason, f"{type(exc).__name__}: {exc}")
