"""Snapshots through S3-compatible object storage: publish a version to a bucket, pull it
into a local root of versions (kv_app/stores/versions.py). Following new ones (sync):
kv_app/stores/sync.py.

A prefix s3://BUCKET/PREFIX holds:
- version-N/data.mdb, version-N/manifest.json (or shard-K/... of a split snapshot): the
  snapshot's files as `kv-app build` wrote them;
- version-N/files.json: every file's path, size and sha256, written after the files;
- current: `version-N`, written last: a reader never sees half a version.

A publisher claims N first (version-N/claim, written only if absent), so two publishers
never write one number. A pull downloads into ROOT/.pull-version-N (kept when a pull is
interrupted: the next pull asks only for the bytes it lacks), checks every file's sha256
against files.json and the snapshot's own checks, then renames it to version-N and points
`current` at it, all under the root's lock; it prunes as publish does (a version a live
server holds is never removed). A pull that fails leaves `current` and every version-N
as they were.

Credentials and endpoint come the standard way of S3 clients (boto3): AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_ENDPOINT_URL for an S3-compatible server, ...
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kv_app.loader import iso_time
from kv_app.stores import versions
from kv_app.stores.build import fsync_dir
from kv_app.stores.snapshot import (
    DATA_FILE,
    MANIFEST,
    SnapshotError,
    open_snapshot,
    resolve,
)

FILES = "files.json"
FILES_FORMAT = "kv_app-remote-version"
POINTER = "current"
CLAIM = "claim"
# The only paths a version may hold: nothing a bucket says can write outside the root.
_SNAPSHOT_FILE = re.compile(r"^(shard-\d{1,2}/)?(data\.mdb|manifest\.json)$")
_STAGING = re.compile(r"^\.pull-version-(\d+)$")
_VERSION = re.compile(r"^version-(\d+)$")
CHUNK = 1 << 20  # bytes a read of a download asks for (less when throttled)

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


class RemoteError(SnapshotError):
    """Object storage could not be used (network, credentials, disk): one line; a sync
    tries again at its next interval."""


class Refused(RemoteError):
    """A version that must not be served (checksum, manifest, missing files): one line; a
    sync does not try it again until the bucket's version changes."""


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix (the prefix may be empty)."""
    m = re.match(r"^s3://([^/]+)/?(.*)$", url)
    if not m:
        raise RemoteError(f"{url}: not an s3://BUCKET/PREFIX address")
    bucket, prefix = m.group(1), m.group(2).strip("/")
    if not 3 <= len(bucket) <= 63:
        raise RemoteError(
            f"{url}: a bucket name has 3 to 63 characters, {bucket!r} has {len(bucket)}"
        )
    return bucket, prefix


def is_remote(path: str) -> bool:
    return str(path).startswith("s3://")


def _reason(e: Exception) -> str:
    """One phrase for what boto3 raised."""
    response = getattr(e, "response", None)
    if response:
        error = response.get("Error", {})
        code = error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = error.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class Remote:
    """One s3://bucket/prefix through a boto3 client (made from the environment)."""

    def __init__(self, url: str, client=None):
        self.url = url.rstrip("/")
        self.bucket, self.prefix = parse_url(url)
        if client is None:
            try:
                import boto3  # the `s3` extra: imported only by those who use it
            except ImportError:
                raise RemoteError(
                    f"{url}: object storage needs boto3: pip install 'kv-app[s3]'"
                ) from None
            client = boto3.client("s3")
        self.s3 = client
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError, OSError)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _fail(self, what: str, e: Exception) -> RemoteError:
        return RemoteError(f"{self.url}: {what}: {_reason(e)}")

    def _missing(self, e: Exception) -> bool:
        response = getattr(e, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        return code in ("NoSuchKey", "404", "NotFound")

    def read(self, *parts: str) -> bytes | None:
        """A small object's bytes, or None when it does not exist."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.key(*parts))["Body"].read()
        except self._errors as e:
            if self._missing(e):
                return None
            raise self._fail(f"cannot read {'/'.join(parts)}", e) from None

    def current(self) -> int:
        """The version the pointer names; RemoteError when there is none."""
        body = self.read(POINTER)
        if body is None:
            raise RemoteError(f"{self.url}: no {POINTER} pointer: nothing published there")
        m = _VERSION.match(body.decode("ascii", "replace").strip())
        if not m:
            raise Refused(f"{self.url}: {POINTER} names {body[:40]!r}, not version-N")
        return int(m.group(1))

    def versions(self) -> list[int]:
        """The version-N 'directories' under the prefix, in order."""
        found = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self.key("") + ("/" if self.prefix else ""),
                Delimiter="/",
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    m = _VERSION.match(common["Prefix"].rstrip("/").rsplit("/", 1)[-1])
                    if m:
                        found.append(int(m.group(1)))
        except self._errors as e:
            raise self._fail("cannot list versions", e) from None
        return sorted(found)

    def files(self, version: int) -> tuple[dict, str]:
        """version-N's files.json, checked, and its ETag; Refused naming what is wrong."""
        name = f"version-{version}"
        try:
            got = self.s3.get_object(Bucket=self.bucket, Key=self.key(name, FILES))
            body, etag = got["Body"].read(), got.get("ETag", "")
        except self._errors as e:
            if self._missing(e):
                raise Refused(
                    f"{self.url}: {name}: no such version (no {name}/{FILES}: missing or "
                    "not finished publishing)"
                ) from None
            raise self._fail(f"cannot read {name}/{FILES}", e) from None
        try:
            listing = json.loads(body)
            files = listing["files"]
            ok = (
                listing.get("format") == FILES_FORMAT
                and listing.get("version") == version
                and isinstance(files, dict)
                and files
                and all(
                    _SNAPSHOT_FILE.match(path)
                    and isinstance(f.get("size"), int)
                    and f["size"] >= 0
                    and re.fullmatch(r"[0-9a-f]{64}", str(f.get("sha256")))
                    for path, f in files.items()
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise Refused(f"{self.url}: {name}: {FILES} is not a kv_app version listing")
        return listing, etag


# --- Publish ---------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-*")) or [directory]


def _check_snapshots(directory: Path, files: dict, where: str) -> dict:
    """Each snapshot in directory passes the checks of open (manifest, size, LMDB header,
    entries) and its data file has the sha256 its manifest says (the sha256 in `files`,
    read from every byte). Returns the (first) manifest; Refused naming what is wrong."""
    manifest = None
    for snapshot in _snapshots(directory):
        rel = "" if snapshot == directory else f"{snapshot.name}/"
        try:
            store = open_snapshot(snapshot)
        except SnapshotError as e:
            raise Refused(f"{where}: {e}") from None
        store.close()
        if store.manifest["data_sha256"] != files[rel + DATA_FILE]["sha256"]:
            raise Refused(f"{where}: {rel}{DATA_FILE} sha256 differs from its manifest's")
        manifest = manifest or store.manifest
    return manifest


def publish(
    source: str | os.PathLike[str],
    url: str,
    *,
    say: Say = _quiet,
    client=None,
    **build_options,
) -> tuple[int, dict]:
    """Publish source to url as its next version-N: a text file is built first (as
    `kv-app build` builds), a snapshot directory (or a root's current, e.g. the Spark
    build's) is sent as it is. Every file is read for its sha256 and the snapshot checked
    before anything is sent; the files go first, then files.json, then the pointer.
    Returns (N, the snapshot's manifest). build_options: build's (strict, progress,
    max_value_bytes, tmp_dir, jobs)."""
    from kv_app.stores.build import build

    remote = Remote(url, client)
    from boto3.exceptions import S3UploadFailedError  # there: Remote() needed boto3

    source = Path(source)
    made = None
    try:
        if source.is_dir():
            snapshot = resolve(source)
        else:
            tmp_dir = build_options.get("tmp_dir")
            made = Path(tempfile.mkdtemp(prefix=".kv-app-publish-", dir=tmp_dir))
            snapshot = made / "snapshot"
            built = build(source, snapshot, say=say, **build_options)
        paths = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
        paths = [p for p in paths if _SNAPSHOT_FILE.match(p)]
        if not paths:
            raise SnapshotError(f"{source}: not a kv_app snapshot (no {MANIFEST})")
        files = {
            p: {"size": (snapshot / p).stat().st_size, "sha256": _sha256(snapshot / p)}
            for p in paths
        }
        manifest = _check_snapshots(snapshot, files, str(snapshot))
        number = _claim(remote, say)
        name = f"version-{number}"
        for path in paths:
            try:
                remote.s3.upload_file(str(snapshot / path), remote.bucket, remote.key(name, path))
            except (*remote._errors, S3UploadFailedError) as e:
                raise remote._fail(f"cannot write {name}/{path}", e) from None
        listing = {
            "format": FILES_FORMAT,
            "version": number,
            "files": files,
            "pairs": sum(
                json.loads((s / MANIFEST).read_bytes())["pairs"] for s in _snapshots(snapshot)
            ),
            "data_version": manifest["source"]["sha256"][:16],
            "published_at": iso_time(time.time()),
        }
        _put(remote, (name, FILES), json.dumps(listing, indent=1).encode())
        # Never move the pointer back: a publisher that claimed a later number and
        # finished first keeps it.
        try:
            now = remote.current()
        except RemoteError:
            now = None
        if now is not None and now > number:
            say(f"{url}: {POINTER} stays at version-{now}, newer than {name}")
        else:
            _put(remote, (POINTER,), f"{name}\n".encode())
        return number, built if made is not None else manifest
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def _put(remote: Remote, parts: tuple[str, ...], body: bytes, **kwargs) -> None:
    try:
        remote.s3.put_object(Bucket=remote.bucket, Key=remote.key(*parts), Body=body, **kwargs)
    except remote._errors as e:
        raise remote._fail(f"cannot write {'/'.join(parts)}", e) from None


def _claim(remote: Remote, say: Say) -> int:
    """Take the next version number: version-N/claim written only if absent (a second
    publisher gets a PreconditionFailed and tries N+1)."""
    number = max(remote.versions(), default=0) + 1
    for _ in range(100):
        try:
            remote.s3.put_object(
                Bucket=remote.bucket,
                Key=remote.key(f"version-{number}", CLAIM),
                Body=f"{os.uname().nodename} pid {os.getpid()} at {iso_time(time.time())}\n".encode(),
                IfNoneMatch="*",
            )
            return number
        except remote._errors as e:
            code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code")
            if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise remote._fail(f"cannot write version-{number}/{CLAIM}", e) from None
            say(f"{remote.url}: version-{number} taken by another publish, trying the next")
            number += 1
    raise RemoteError(f"{remote.url}: could not claim a version number")


# --- Pull ------------------------------------------------------------------------------------


@dataclass
class Pulled:
    """What a pull did."""

    version: int
    switched: bool  # current now points at it (False: --stage, or it already did)
    fetched: int = 0  # bytes downloaded by this pull
    resumed: int = 0  # bytes a previous, interrupted pull had left and this one kept
    total: int = 0  # bytes of the version
    seconds: float = 0.0
    pruned: list[int] = field(default_factory=list)


class Throttle:
    """At most `rate` bytes a second on average (0: no limit)."""

    def __init__(self, rate: int | None):
        self.rate = rate or 0
        self.started = time.monotonic()
        self.taken = 0

    def chunk(self) -> int:
        return CHUNK if not self.rate else max(4096, min(CHUNK, self.rate // 10))

    def take(self, n: int) -> None:
        if not self.rate:
            return
        self.taken += n
        ahead = self.taken / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def pull(
    url: str,
    root: str | os.PathLike[str],
    *,
    version: int | None = None,
    keep: int = 3,
    max_bytes_per_second: int | None = None,
    stage: bool = False,
    say: Say = _quiet,
    client=None,
) -> Pulled:
    """Fetch url's current version (or `version`) into root as version-N, check every
    file's sha256 and the snapshot, then point root's current at it and prune to `keep`
    (stage: fetch and check only; a later pull of the same N switches at once). Resumes a
    download an earlier pull left; Refused/RemoteError with one line otherwise, and the
    root's current and versions as they were."""
    started = time.monotonic()
    remote = Remote(url, client)
    number = remote.current() if version is None else version
    listing, _ = remote.files(number)
    files: dict = listing["files"]
    root = Path(root)
    name = f"version-{number}"
    where = f"{remote.url}: {name}"
    with versions.locked(root, say):
        now = versions.current_version(root)  # a bad `current` is refused first
        target = root / name
        done = Pulled(number, switched=False, total=sum(f["size"] for f in files.values()))
        if target.is_dir():
            _same(target, files, where, root)
        else:
            _fetch(remote, root, number, files, max_bytes_per_second, say, done)
        if not stage and now != number:
            versions.point_current(root, number)
            done.switched = True
        if not stage:
            done.pruned = versions.prune(root, keep, say)
    done.seconds = time.monotonic() - started
    return done


def _same(target: Path, files: dict, where: str, root: Path) -> None:
    """A local version-N already there is the bucket's version-N (sizes, the manifest's
    sha256 and the snapshot's checks: its data file was read whole when it was fetched
    and has been read-only since), or Refused."""
    for path, f in files.items():
        local = target / path
        if not local.is_file() or local.stat().st_size != f["size"]:
            raise Refused(f"{where}: {root}/{target.name} is there and differs ({path})")
    for path in files:
        if path.endswith(MANIFEST) and _sha256(target / path) != files[path]["sha256"]:
            raise Refused(f"{where}: {root}/{target.name} is there and differs ({path})")
    _check_snapshots(target, files, where)


def _fetch(remote, root, number, files, rate, say, done: Pulled) -> None:
    """Download version-N into root/.pull-version-N (resuming what is there), check it,
    and rename it to root/version-N. Other versions' partial downloads are removed."""
    name = f"version-{number}"
    where = f"{remote.url}: {name}"
    staging = root / f".pull-{name}"
    for entry in root.iterdir():
        if _STAGING.match(entry.name) and entry != staging:
            shutil.rmtree(entry, ignore_errors=True)
            say(f"{root}: removed {entry.name}, a partial download of another version")
    staging.mkdir(exist_ok=True)
    have = 0
    for path in files:
        for candidate in (staging / path, staging / f"{path}.part"):
            if candidate.is_file():
                have += candidate.stat().st_size
    needed = done.total - have
    free = shutil.disk_usage(root).free
    if needed > free:
        raise RemoteError(
            f"{where}: needs {needed / 1e6:,.1f} MB more on {root}, {free / 1e6:,.1f} MB free"
        )
    throttle = Throttle(rate)
    for path, f in sorted(files.items()):
        _fetch_file(remote, name, path, f, staging, throttle, say, done)
    _check_snapshots(staging, files, where)
    for path in files:
        (staging / path).chmod(0o444)
    for directory in {(staging / p).parent for p in files}:
        fsync_dir(directory)
    os.rename(staging, root / name)
    fsync_dir(root)


def _fetch_file(remote, name, path, f, staging: Path, throttle, say, done: Pulled) -> None:
    """One file of a version: what an interrupted pull left of it is kept and only the
    rest asked for (a ranged GET); its sha256 is checked before it is renamed into
    place. A file that fails its check is removed (the next pull fetches it whole)."""
    final = staging / path
    part = staging / f"{path}.part"
    where = f"{remote.url}: {name}"
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file() and final.stat().st_size == f["size"]:
        if _sha256(final) == f["sha256"]:
            done.resumed += f["size"]
            return
        final.unlink()
    digest = hashlib.sha256()
    have = part.stat().st_size if part.is_file() else 0
    if have > f["size"]:
        part.unlink()
        have = 0
    if have:
        with open(part, "rb") as old:
            while block := old.read(CHUNK):
                digest.update(block)
        say(f"{where}: resuming {path} at {have:,} of {f['size']:,} bytes")
        done.resumed += have
    with open(part, "ab") as out:
        if have < f["size"]:
            kwargs = {"Range": f"bytes={have}-"} if have else {}
            try:
                body = remote.s3.get_object(
                    Bucket=remote.bucket, Key=remote.key(name, path), **kwargs
                )["Body"]
                size = throttle.chunk()
                while block := body.read(size):
                    out.write(block)
                    digest.update(block)
                    done.fetched += len(block)
                    throttle.take(len(block))
            except remote._errors as e:
                if isinstance(e, OSError) and e.errno is not None:  # ours: the disk
                    raise RemoteError(f"{where}: cannot write {part}: {e.strerror}") from None
                if remote._missing(e):
                    raise Refused(f"{where}: {path} is missing from the bucket") from None
                raise remote._fail(f"cannot read {name}/{path}", e) from None
        out.flush()
        os.fsync(out.fileno())
    got = part.stat().st_size
    if got != f["size"] or digest.hexdigest() != f["sha256"]:
        part.unlink()
        what = f"{got:,} bytes, {f['size']:,} listed" if got != f["size"] else "sha256 mismatch"
        raise Refused(f"{where}: {path} {what}")
    os.rename(part, final)
