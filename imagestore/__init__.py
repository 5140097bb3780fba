"""The results store: where every verified image is kept, a directory or S3-compatible
object storage chosen by FLUXFARM_RESULTS_URL, behind the one `ResultsStore` Protocol."""

from __future__ import annotations

from imagestore.opening import open_results_store
from imagestore.protocol import ResultsStore, StoredObject, image_key, upload_key

__all__ = ["ResultsStore", "StoredObject", "image_key", "open_results_store", "upload_key"]
