"""The local broker's S3 store: LocalBucket (PyPI `localbucket`, buckets as folders on disk)
with the two things Tansu's s3 engine needs from a store and LocalBucket alone does not give.

Tansu hands out each partition's offsets by rewriting a watermark object with `If-Match:
<etag>` and creates each record batch with `If-None-Match: *`; a store that ignores either
lets two racing writes take the same offsets, and the later silently replaces the earlier
(an acknowledged message lost). So here:

- a PUT's condition and its replacement of the file are one step (one lock for every object
  write: `If-Match` and `If-None-Match` are checked against the file as it is at that moment),
  and a GET's body and ETag describe the same version (the read takes the same lock);
- the answer goes out only after the file and its directory are on disk (`fsync`), so what the
  broker acknowledged outlives a crash of the store, the broker or the whole stack.

Run: `python broker_store.py DATA_ROOT --port PORT` (the devstack starts it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

import localbucket

# Every object write of the store: a condition is checked and its file replaced as one step.
_WRITES = threading.Lock()

# ETags the store keeps in memory. LocalBucket caches one per object it ever wrote or listed and
# never forgets any: the broker writes a batch object per produce, so the store grew by about
# 4 MiB a minute under load. Tansu lists a partition's every record on each fetch, and the list
# answers each object's ETag, so the bound must hold every object the consumers still list: a
# cache smaller than that recomputes MD5s on every listing (4,096 entries cost the store 30 %
# more CPU in a one-minute benchmark). 100,000 entries is about 29 MiB (290 bytes each), hours
# of a local stack's events; past that, listings hash files again (`make clean` starts afresh).
ETAG_CACHE_SIZE = 100_000


class _RecentEtags(OrderedDict[str, tuple[tuple[int, int, int, int], str]]):
    """LocalBucket's ETag cache (it reads and writes it under its own lock), holding only the
    `maxsize` most recently used entries."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        if key in self:
            self.move_to_end(key)
        return super().get(key, default)

    def __setitem__(self, key: str, value: tuple[tuple[int, int, int, int], str]) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)


def bound_etag_cache(maxsize: int = ETAG_CACHE_SIZE) -> None:
    """Replace LocalBucket's unbounded ETag cache with one of at most `maxsize` entries."""
    localbucket._etag_cache = _RecentEtags(maxsize)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ConditionalWriteHandler(localbucket.S3Handler):  # type: ignore[misc]  # untyped package
    """PutObject honouring `If-Match` and `If-None-Match` atomically, durable before it answers."""

    # Headers and body go out in two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms on loopback), and Tansu makes several requests per fetch.
    disable_nagle_algorithm = True

    def _write_object(self, bucket: str, key: str, write: Callable[[BinaryIO], str]) -> str:
        target: Path = self._object_path(bucket, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=localbucket.TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                etag = write(file)
                file.flush()
                os.fsync(file.fileno())
            with _WRITES:
                self._check_write_conditions(target)
                os.replace(temporary, target)
                # Inside the lock: the cache is keyed by the file's identity, which another
                # write could change the moment the lock is released.
                localbucket.remember_etag(target, etag)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return etag

    def _list_entries(
        self,
        bucket_dir: Path,
        prefix: str,
        delimiter: str,
        marker: str,
        marker_is_prefix: bool,
        max_keys: int,
    ) -> tuple[list[tuple[str, Path]], list[str], bool, str]:
        """LocalBucket's listing, walking only the folder the prefix names: Tansu lists one
        partition's records on every fetch, and LocalBucket walks the whole bucket for it (three
        times slower than s3rver on a chaos run's data, which starved the stack's consumers)."""
        folder = prefix.rpartition("/")[0]
        root = os.path.join(bucket_dir, *folder.split("/")) if folder else str(bucket_dir)
        keys: list[str] = []
        for directory, _, files in os.walk(root):
            relative = os.path.relpath(directory, bucket_dir).replace(os.sep, "/")
            base = "" if relative == "." else relative + "/"
            keys.extend(
                base + name for name in files if not name.startswith(localbucket.TEMP_PREFIX)
            )
        keys.sort(key=str.encode)
        contents: list[tuple[str, Path]] = []
        common_prefixes: list[str] = []
        last_entry = ""
        truncated = False
        for key in keys:
            if not key.startswith(prefix):
                continue
            if marker and (
                key.encode() <= marker.encode() or (marker_is_prefix and key.startswith(marker))
            ):
                continue
            common = ""
            if delimiter:
                index = key.find(delimiter, len(prefix))
                if index >= 0:
                    common = key[: index + len(delimiter)]
            if common and common_prefixes and common_prefixes[-1] == common:
                continue
            if len(contents) + len(common_prefixes) >= max_keys:
                truncated = max_keys > 0
                break
            if common:
                common_prefixes.append(common)
                last_entry = "P:" + common
            else:
                contents.append((key, bucket_dir.joinpath(*key.split("/"))))
                last_entry = "K:" + key
        return contents, common_prefixes, truncated, last_entry

    def _get(self, bucket: str, key: str, include_body: bool) -> None:
        """GetObject/HeadObject with the ETag of the very file it sends: LocalBucket opens the
        file, then reads the ETag by path, and a write between the two paired the old content
        with the new ETag. Tansu caches that pair, so its next If-Match write passed with a
        watermark computed from the old content, and the broker handed out offsets again."""
        with _WRITES:
            super()._get(bucket, key, include_body)

    def _check_write_conditions(self, target: Path) -> None:
        exists = target.is_file()
        if_match = self.headers.get("If-Match")
        # S3 answers a missing object with 404; 412 makes Tansu re-read it and try again,
        # which is what a writer racing a delete needs.
        if if_match is not None and (
            not exists or not localbucket.etag_matches(if_match, localbucket.object_etag(target))
        ):
            raise self._precondition_failed_error()
        if_none_match = self.headers.get("If-None-Match")
        if (
            if_none_match is not None
            and exists
            and localbucket.etag_matches(if_none_match, localbucket.object_etag(target))
        ):
            raise self._precondition_failed_error()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_root", type=Path, help="directory holding the buckets")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", action="append", default=[], help="create if missing")
    args = parser.parse_args()
    data_root = args.data_root.resolve()
    for bucket in args.bucket:
        (data_root / bucket).mkdir(parents=True, exist_ok=True)
    ConditionalWriteHandler.data_root = data_root
    bound_etag_cache()
    server = ThreadingHTTPServer((args.host, args.port), ConditionalWriteHandler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
