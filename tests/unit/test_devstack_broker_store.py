"""The local broker's S3 store honours the conditional writes Tansu allocates offsets with:
of two writers holding the same version exactly one wins, and a create never replaces."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import localbucket
import pytest

from devstack.broker_store import ConditionalWriteHandler, bound_etag_cache

BUCKET = "tansu"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    (tmp_path / BUCKET).mkdir()
    ConditionalWriteHandler.data_root = tmp_path
    server = ThreadingHTTPServer(("127.0.0.1", 0), ConditionalWriteHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{BUCKET}"
    server.shutdown()
    server.server_close()


def put(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.put(url, content=body, headers=headers, timeout=10)


def test_if_match_replaces_only_the_version_it_names(store: str) -> None:
    url = f"{store}/partitions/0/watermark.json"
    first = put(url, b'{"high":1}')
    assert first.status_code == 200
    second = put(url, b'{"high":2}', **{"If-Match": first.headers["ETag"]})
    assert second.status_code == 200
    stale = put(url, b'{"high":9}', **{"If-Match": first.headers["ETag"]})
    assert stale.status_code == 412
    assert "PreconditionFailed" in stale.text
    assert httpx.get(url, timeout=10).content == b'{"high":2}'


def test_if_match_on_a_missing_object_fails(store: str) -> None:
    response = put(f"{store}/gone.json", b"{}", **{"If-Match": '"0123456789abcdef"'})
    assert response.status_code == 412
    assert httpx.get(f"{store}/gone.json", timeout=10).status_code == 404


def test_if_none_match_never_replaces_an_object(store: str) -> None:
    url = f"{store}/records/00000000000000000000.batch"
    assert put(url, b"first", **{"If-None-Match": "*"}).status_code == 200
    assert put(url, b"second", **{"If-None-Match": "*"}).status_code == 412
    assert httpx.get(url, timeout=10).content == b"first"


def test_of_writers_racing_from_one_version_exactly_one_wins(store: str) -> None:
    url = f"{store}/partitions/0/watermark.json"
    etag = put(url, b'{"high":0}').headers["ETag"]
    bodies = [f'{{"high":{n}}}'.encode() for n in range(1, 33)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda body: put(url, body, **{"If-Match": etag}), bodies))
    winners = [body for body, r in zip(bodies, statuses, strict=True) if r.status_code == 200]
    assert len(winners) == 1
    assert sorted(r.status_code for r in statuses).count(412) == len(bodies) - 1
    assert httpx.get(url, timeout=10).content == winners[0]


def test_of_creators_racing_for_one_key_exactly_one_wins(store: str) -> None:
    url = f"{store}/records/00000000000000000007.batch"
    bodies = [f"batch-{n}".encode() for n in range(32)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda body: put(url, body, **{"If-None-Match": "*"}), bodies))
    winners = [body for body, r in zip(bodies, statuses, strict=True) if r.status_code == 200]
    assert len(winners) == 1
    assert httpx.get(url, timeout=10).content == winners[0]


@pytest.fixture
def plain_store(tmp_path: Path) -> Iterator[str]:
    """LocalBucket as shipped, on the same folder: the listing must not differ from it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), localbucket.S3Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{BUCKET}"
    server.shutdown()
    server.server_close()


def test_listing_one_folder_answers_what_localbucket_answers(store: str, plain_store: str) -> None:
    localbucket.S3Handler.data_root = ConditionalWriteHandler.data_root
    keys = [
        *(
            f"clusters/c/topics/t/partitions/{p:010d}/records/{o:020d}.batch"
            for p in range(2)
            for o in range(5)
        ),
        "clusters/c/topics/t/partitions/0000000000/watermark.json",
        "clusters/c/groups/consumers/g.json",
        "clusters/c/groups/consumers/g/offsets/t/partitions/0000000000.json",
        "clusters/c/groups/consumers/g2.json",
        "clusters/c/meta.json",
    ]
    for key in keys:
        assert put(f"{store}/{key}", b"{}").status_code == 200
    prefixes = ["", "clusters/", "clusters/c/topics/t/partitions/0000000000/records/",
                "clusters/c/groups/consumers/g", "clu", "clusters/c/nothing/"]  # fmt: skip
    for prefix in prefixes:
        for extra in ({}, {"delimiter": "/"}, {"max-keys": "3"}, {"start-after": keys[3]}):
            params = {"list-type": "2", "prefix": prefix, **extra}
            ours = httpx.get(store, params=params, timeout=10)
            theirs = httpx.get(plain_store, params=params, timeout=10)
            assert ours.status_code == theirs.status_code == 200
            assert ours.text == theirs.text, params


def test_a_read_racing_writes_answers_a_body_and_its_own_etag(store: str) -> None:
    """Tansu caches what a GET answered and writes the next version `If-Match` that ETag: an
    old body paired with the new ETag lets a write based on stale data through."""
    url = f"{store}/partitions/0/watermark.json"
    put(url, b'{"high":0}')
    stop = threading.Event()

    def write() -> None:
        high = 0
        while not stop.is_set():
            high += 1
            put(url, f'{{"high":{high}}}'.encode() + b" " * (high % 7))

    writers = [threading.Thread(target=write) for _ in range(2)]
    for writer in writers:
        writer.start()
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(400):
                response = client.get(url)
                assert (
                    response.headers["ETag"].strip('"')
                    == hashlib.md5(response.content, usedforsecurity=False).hexdigest()
                )
    finally:
        stop.set()
        for writer in writers:
            writer.join()


def test_the_etag_cache_stays_bounded_and_etags_stay_right(store: str) -> None:
    bound_etag_cache(maxsize=16)
    bodies = {f"{store}/records/{n:020d}.batch": f"batch {n}".encode() for n in range(100)}
    for url, body in bodies.items():
        assert put(url, body, **{"If-None-Match": "*"}).status_code == 200
    assert len(localbucket._etag_cache) <= 16
    # An ETag fallen out of the cache is the file's MD5 again, and conditions still hold.
    for url, body in bodies.items():
        answer = httpx.get(url, timeout=10)
        assert answer.headers["ETag"].strip('"') == hashlib.md5(body).hexdigest()  # noqa: S324
    assert len(localbucket._etag_cache) <= 16
    first = next(iter(bodies))
    etag = httpx.get(first, timeout=10).headers["ETag"]
    assert put(first, b"replaced", **{"If-Match": etag}).status_code == 200
    assert put(first, b"stale", **{"If-Match": etag}).status_code == 412
