"""Google's Python Cloud Storage client (google-cloud-storage) against the emulator.

Run by tests/clients_python.rs with STORAGE_EMULATOR_HOST set to the emulator. Uploads (one
request and resumable in chunks), downloads (whole and ranged), lists (prefix, delimiter,
placeholders), keeps `a` beside `a/b`, uses generation preconditions and deletes. Exits
non-zero with the failed assertion on any difference; prints one summary line.
"""

import os
import sys

from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def main():
    assert os.environ.get("STORAGE_EMULATOR_HOST"), "STORAGE_EMULATOR_HOST is not set"
    client = storage.Client(project="python-check", credentials=AnonymousCredentials())
    bucket = client.create_bucket("python-storage-check", location="US-CENTRAL1")
    check(client.get_bucket("python-storage-check").name == bucket.name, "bucket get")

    # One-request upload with metadata, then a precondition that must fail.
    small = bucket.blob("dir/small.txt")
    small.metadata = {"origin": "python"}
    small.upload_from_string(b"hello from python", content_type="text/plain", if_generation_match=0)
    small.reload()
    check(small.size == 17 and small.metadata == {"origin": "python"}, "small upload metadata")
    try:
        bucket.blob("dir/small.txt").upload_from_string(b"again", if_generation_match=0)
        check(False, "ifGenerationMatch=0 on an existing object must fail")
    except exceptions.PreconditionFailed:
        check(True, "412")

    # Resumable upload in 256 KiB chunks, whole and ranged download.
    data = bytes((i * 7 + 3) % 251 for i in range(3 * 256 * 1024 + 1234))
    big = bucket.blob("dir/big.bin", chunk_size=256 * 1024)
    big.upload_from_string(data, content_type="application/octet-stream")
    check(bucket.blob("dir/big.bin").download_as_bytes() == data, "resumable round trip")
    part = bucket.blob("dir/big.bin").download_as_bytes(start=1000, end=1999)
    check(part == data[1000:2000], "ranged download")

    # Placeholders, `a` beside `a/b`, listing with a delimiter.
    for name in ["dir/", "dir/sub/", "dir/sub/x", "a", "a/b"]:
        bucket.blob(name).upload_from_string(name.encode())
    check(bucket.blob("a").download_as_bytes() == b"a", "a")
    check(bucket.blob("a/b").download_as_bytes() == b"a/b", "a/b")
    it = client.list_blobs("python-storage-check", prefix="dir/", delimiter="/")
    names = [b.name for b in it]
    check(names == ["dir/", "dir/big.bin", "dir/small.txt"], f"items {names}")
    check(sorted(it.prefixes) == ["dir/sub/"], f"prefixes {sorted(it.prefixes)}")
    every = [b.name for b in client.list_blobs("python-storage-check", max_results=100, page_size=2)]
    check(len(every) == 7, f"paged listing {every}")

    # Metadata patch, copy, compose.
    small.metadata = {"origin": "python", "patched": "yes"}
    small.patch()
    check(bucket.get_blob("dir/small.txt").metadata["patched"] == "yes", "patch")
    bucket.copy_blob(small, bucket, "copy.txt")
    check(bucket.blob("copy.txt").download_as_bytes() == b"hello from python", "copy")
    composed = bucket.blob("composed.txt")
    composed.compose([bucket.blob("a"), bucket.blob("a/b")])
    check(composed.download_as_bytes() == b"aa/b", "compose")

    # Delete everything, then the bucket.
    for b in list(client.list_blobs("python-storage-check")):
        b.delete()
    check(list(client.list_blobs("python-storage-check")) == [], "empty after deletes")
    bucket.delete()
    print(f"storage_check ok ({checks} checks)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as one line and exit 1
        print(f"storage_check failed after {checks} checks: {type(e).__name__}: {e}", file=sys.stderr)
        raise
