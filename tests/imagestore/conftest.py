"""The S3-protocol server the results-store tests write to, one per module."""

from __future__ import annotations

from tests.s3server import moto_s3

__all__ = ["moto_s3"]
