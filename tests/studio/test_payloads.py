"""``studio.payloads``: content digests, gzip once, built once under concurrency, bounded by bytes."""
from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time

import numpy as np

from studio.payloads import PayloadCache, annotation_content, image_extension, json_payload


def test_json_payload_is_compact_gzipped_and_named_by_its_content():
    payload = json_payload({"b": [1, 2], "a": "x"})
    text = gzip.decompress(payload.body)
    assert text == b'{"b":[1,2],"a":"x"}' and payload.plain() == text
    assert payload.digest == hashlib.sha256(text).hexdigest() and payload.gzipped
    assert json_payload({"b": [1, 2], "a": "x"}).body == payload.body  # reproducible bytes (no gzip time stamp)
    assert json_payload({"b": [1, 3], "a": "x"}).digest != payload.digest


def test_annotation_content_thresholds_at_one_half_and_rounds_the_prediction():
    values = np.array([0.0, 0.5, 0.4999, 0.91234, 1.0])
    content = annotation_content({"chair": values})
    assert content["layers"] == {"chair": [1, 3, 4]}
    assert content["prediction"] == {"chair": [0.0, 0.5, 0.5, 0.912, 1.0]}
    assert json.loads(json.dumps(content)) == content


def test_each_payload_is_built_once_even_when_asked_for_at_once():
    cache, calls = PayloadCache(), []

    def build():
        calls.append(1)
        time.sleep(0.05)
        return json_payload({"n": 1})

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("k",), build))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and cache.builds == 1 and len({id(result) for result in results}) == 1


def test_the_cache_keeps_the_most_recently_used_within_its_bytes():
    sizes = {key: len(json_payload({"k": key, "pad": "x" * 400}).body) for key in range(4)}
    cache = PayloadCache(max_bytes=sizes[0] + sizes[1] + sizes[2] // 2)
    for key in range(3):
        cache.get((key,), lambda key=key: json_payload({"k": key, "pad": "x" * 400}))
    assert cache.builds == 3
    cache.get((1,), lambda: json_payload({"k": 1, "pad": "x" * 400}))  # kept: the most recent two fit
    cache.get((2,), lambda: json_payload({"k": 2, "pad": "x" * 400}))
    assert cache.builds == 3
    cache.get((0,), lambda: json_payload({"k": 0, "pad": "x" * 400}))  # the oldest went: built again
    assert cache.builds == 4


def test_every_stored_image_format_is_served_with_its_own_type():
    from annotations.files import _SUFFIXES
    from studio.payloads import IMAGE_TYPES

    assert {image_extension(name) for name in _SUFFIXES} == set(IMAGE_TYPES) == set(_SUFFIXES)
    assert [image_extension(name) for name in ("JPEG", "BMP", "gif", "../x")] == ["jpeg", "bmp", "png", "png"]
