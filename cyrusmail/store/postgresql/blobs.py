"""Where the PostgreSQL store keeps message bodies: ``[store] blobs``.

Either way a body is stored once by the SHA-256 of its bytes, in a row of
``blobs`` that counts the messages using it (``refs``, changed under the
row's lock, the row deleted at 0).  :func:`body_store` chooses, from the
setting, one of:

``database`` (:class:`DatabaseBlobs`)
    The bytes in the row's ``data`` column.

``/an/absolute/folder`` (:class:`FolderBlobs`)
    The bytes in a file of a folder every server mounts (NFS, ...), named
    by the hash under two fan-out folders (``ab/cd/abcd...``), 0600 in
    0700 folders; the row keeps the hash, size and count, ``data`` NULL.

``s3://bucket/prefix`` (:class:`S3Blobs`)
    The same, as objects of an S3-compatible store (boto3).

The folder's rules, so that a row never names a missing file:

- A new body is copied to ``tmp/`` and fsynced before the transaction;
  inside it, under the body's advisory lock (:func:`lock`), it is renamed
  to its name (unless a file has it already) and the folder fsynced, then
  its row is counted: the file is durable before the COMMIT that makes a
  message use it.
- A file is removed only once the DELETE of its last row is committed: in a
  transaction of its own, under the same lock, if no row is there.  So an
  append of the same body on another server either comes after (and writes
  the file again) or before (and the row is seen).
- What a crash leaves is only ever a file without a row: a copy in
  ``tmp/``, a file renamed by a transaction that did not commit, or one
  whose delete committed just before the crash.  :meth:`FolderBlobs.sweep`
  (at every server's start) removes those older than an hour.

Rows written before a switch from ``database`` to a folder keep their
bytes in ``data`` and are still read from there.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from cyrusmail.private_files import PRIVATE_FOLDER, create_private
from cyrusmail.store.maildir.files import fsync_dir, unlink_quietly

_log = Logger()

#: The first key of a body's advisory lock (the second is from its hash): its own key space.
BLOB_LOCK = 0x626C6F62  # "blob"

#: Bytes read or copied at a time.
CHUNK = 1 << 20

DATABASE = "database"

#: A body's name: its SHA-256, hex.
SHA = re.compile(r"[0-9a-f]{64}")


@dataclass
class Body:
    """A body ready to be counted in a transaction: its hash and size, and its bytes
    (the database) or the private copy waiting to be renamed (a folder)."""

    sha: str
    size: int
    data: bytes | None = None
    copy: Path | None = None
    source: Path | None = None


def lock(db, sha: str) -> None:
    """Hold the advisory lock of body ``sha`` until the end of the transaction."""
    db.execute("SELECT pg_advisory_xact_lock(%s, %s)", (BLOB_LOCK, int(sha[:8], 16) - (1 << 31)))


def body_store(setting: str) -> DatabaseBlobs | FolderBlobs | S3Blobs:
    """The body store ``[store] blobs`` names: ``database``, an absolute folder or ``s3://bucket/prefix``."""
    if setting == DATABASE:
        return DatabaseBlobs()
    if setting.startswith("s3://"):
        return S3Blobs(setting)
    return FolderBlobs(Path(setting))


class DatabaseBlobs:
    """Bodies in the ``data`` column of their ``blobs`` row."""

    folder: Path | None = None
    setting = DATABASE  # as [store] blobs names it

    def prepare(self, path: Path | str) -> Body:
        """Before the transaction: read a staged message."""
        data = Path(path).read_bytes()
        return Body(hashlib.sha256(data).hexdigest(), len(data), data=data)

    def add(self, db, body: Body) -> None:
        """In the transaction: one more message uses ``body``."""
        db.execute("INSERT INTO blobs (sha, data, size, refs) VALUES (%s, %s, %s, 1) ON CONFLICT (sha)"
                   " DO UPDATE SET refs = blobs.refs + 1, data = coalesce(blobs.data, excluded.data)",
                   (body.sha, body.data, body.size))

    def discard(self, body: Body) -> None:
        """After the transaction, committed or not."""

    def forget(self, store, shas: list[str]) -> None:
        """Rows of ``shas`` were deleted in this transaction: nothing more to remove."""

    def read(self, db, mailbox_id: int, uid: int, start: int, length: int | None) -> bytes | None:
        """Bytes ``[start, start + length)`` of a message's body (to the end: None); None: no message."""
        row = db.execute(
            "SELECT substring(b.data FROM %s::integer FOR coalesce(%s::integer, octet_length(b.data))) FROM messages AS m"
            " JOIN blobs AS b ON b.sha = m.blob WHERE m.mailbox_id = %s AND m.uid = %s",
            (start + 1, length, mailbox_id, uid)).fetchone()
        if row is None:
            return None
        if row[0] is None:
            raise RuntimeError(f"the body of UID {uid} is in a [store] blobs folder, and blobs = database")
        return bytes(row[0])

    def open(self, db, mailbox_id: int, uid: int):
        """A message's body as a binary file; None: no message."""
        data = self.read(db, mailbox_id, uid, 0, None)
        return None if data is None else io.BytesIO(data)

    def open_blob(self, db, sha: str):
        """Body ``sha`` as a binary file (a queued message's); None: no such body."""
        row = db.execute("SELECT data FROM blobs WHERE sha = %s", (sha,)).fetchone()
        if row is None:
            return None
        if row[0] is None:
            raise RuntimeError(f"the body {sha} is in a [store] blobs folder, and blobs = database")
        return io.BytesIO(bytes(row[0]))

    def sweep(self, store, max_age: float) -> int:
        """Files without a row removed: none here."""
        return 0


class _OutsideBlobs:
    """What the folder and S3 share: bytes outside the database, removed after the COMMIT."""

    folder: Path | None = None

    def forget(self, store, shas: list[str]) -> None:
        """Rows of ``shas`` were deleted in this transaction: their bytes go once it is committed."""
        if shas:
            store.after_commit(lambda: self._remove(store, shas))

    def _remove(self, store, shas: list[str]) -> int:
        """Remove the bodies of ``shas`` that no row names, each under its lock in a transaction of
        its own (never two locks held: no deadlock with an append); how many went.  A failure
        leaves orphans for :meth:`sweep`, never a failed command."""
        removed = 0
        for sha in shas:
            try:
                with store.write() as db:
                    lock(db, sha)
                    if db.execute("SELECT 1 FROM blobs WHERE sha = %s", (sha,)).fetchone() is None:
                        removed += self._delete(sha)
            except Exception as error:  # noqa: BLE001 - the sweep finds it later
                _log.warn("cyrusmail: the body {sha} stays (an orphan for the sweep): {error}",
                          sha=sha, error=str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
        return removed

    def _delete(self, sha: str) -> bool:
        raise NotImplementedError

    def _orphans(self, store, names: list[str]) -> int:
        """Remove those of ``names`` (unchanged for long) that are hashes no row names: what is not
        named as a body is never touched."""
        names = [name for name in names if SHA.fullmatch(name)]
        if not names:
            return 0
        known = {sha for (sha,) in store.db.execute("SELECT sha FROM blobs WHERE sha = ANY(%s)", (names,))}
        return self._remove(store, [sha for sha in names if sha not in known])

    def read(self, db, mailbox_id: int, uid: int, start: int, length: int | None) -> bytes | None:
        source = self.open(db, mailbox_id, uid)
        if source is None:
            return None
        with source:
            source.seek(start)
            return source.read() if length is None else source.read(length)

    def open(self, db, mailbox_id: int, uid: int):
        row = db.execute("SELECT m.blob, b.data, b.size FROM messages AS m JOIN blobs AS b ON b.sha = m.blob"
                         " WHERE m.mailbox_id = %s AND m.uid = %s", (mailbox_id, uid)).fetchone()
        if row is None:
            return None
        return self._body(*row)

    def open_blob(self, db, sha: str):
        """Body ``sha`` as a binary file (a queued message's); None: no such body."""
        row = db.execute("SELECT sha, data, size FROM blobs WHERE sha = %s", (sha,)).fetchone()
        return None if row is None else self._body(*row)

    def _body(self, sha: str, data, size: int):
        if data is not None:  # stored before the switch out of the database
            return io.BytesIO(bytes(data))
        return self._open(sha, size)

    def _open(self, sha: str, size: int):
        raise NotImplementedError


class FolderBlobs(_OutsideBlobs):
    """Bodies in content-addressed files of a shared folder (see the module's rules)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.setting = str(folder)
        self.tmp_dir = folder / "tmp"
        self._made(self.tmp_dir)

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / sha[2:4] / sha

    def _made(self, folder: Path) -> None:
        """Make ``folder`` (0700) and the fan-out folders above it, each new name made durable."""
        if folder.is_dir():
            return
        if folder.parent != self.folder:
            self._made(folder.parent)
        try:
            folder.mkdir(mode=PRIVATE_FOLDER)
        except FileExistsError:
            return
        fsync_dir(folder.parent)

    def prepare(self, path: Path | str) -> Body:
        """Before the transaction: a durable private copy of a staged message in ``tmp/``, and its hash."""
        copy = self.tmp_dir / f"{time.time_ns()}.{secrets.token_hex(8)}"
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as source, create_private(copy) as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            unlink_quietly(copy)
            raise
        return Body(digest.hexdigest(), size, copy=copy)

    def add(self, db, body: Body) -> None:
        """In the transaction, under the body's lock: the copy takes its name (durably), then the row counts it."""
        lock(db, body.sha)
        target = self.path(body.sha)
        self._made(target.parent)
        if target.exists():  # the same bytes, complete (only a fsynced copy is ever renamed): keep its inode,
            self.discard(body)  # which another server may be reading
        else:
            os.replace(body.copy, target)
            body.copy = None
        fsync_dir(target.parent)
        db.execute("INSERT INTO blobs (sha, size, refs) VALUES (%s, %s, 1)"
                   " ON CONFLICT (sha) DO UPDATE SET refs = blobs.refs + 1", (body.sha, body.size))

    def discard(self, body: Body) -> None:
        """After the transaction: a copy not renamed (it failed before) goes."""
        if body.copy is not None:
            unlink_quietly(body.copy)
            body.copy = None

    def _delete(self, sha: str) -> bool:
        path = self.path(sha)
        if not path.exists():
            return False
        path.unlink()
        fsync_dir(path.parent)
        return True

    def _open(self, sha: str, size: int):
        return open(self.path(sha), "rb")

    def sweep(self, store, max_age: float) -> int:
        """Remove copies in ``tmp/`` and files no row names, not changed for ``max_age``
        seconds (an append's copy is younger); how many went."""
        cutoff = time.time() - max_age
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if _older(entry, cutoff):
                unlink_quietly(Path(entry.path))
                removed += 1
        for top in os.scandir(self.folder):
            if len(top.name) != 2 or not top.is_dir(follow_symlinks=False):
                continue
            for fan in os.scandir(top.path):
                if not fan.is_dir(follow_symlinks=False):
                    continue
                removed += self._orphans(store, [entry.name for entry in os.scandir(fan.path) if _older(entry, cutoff)
                                                 and Path(entry.path) == self.path(entry.name)])
        return removed


class S3Blobs(_OutsideBlobs):
    """Bodies as objects of an S3-compatible bucket (``s3://bucket/prefix``), keyed as the folder's
    files; the endpoint and credentials are boto3's own (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``~/.aws/...``).  A PUT is durable once answered: the upload, under the body's lock, is the
    folder's rename; the removal and the sweep are the folder's."""

    def __init__(self, setting: str):
        import boto3
        from botocore.config import Config

        self.setting = setting
        self.bucket, _, prefix = setting[len("s3://"):].partition("/")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client("s3", config=Config(retries={"mode": "standard"}))

    def key(self, sha: str) -> str:
        return f"{self.prefix}{sha[:2]}/{sha[2:4]}/{sha}"

    def check(self) -> None:
        """Raise unless the bucket answers (the server's start-up check)."""
        self.client.head_bucket(Bucket=self.bucket)

    def prepare(self, path: Path | str) -> Body:
        """Before the transaction: the staged message's hash (it is uploaded from there)."""
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        return Body(digest.hexdigest(), size, source=Path(path))

    def add(self, db, body: Body) -> None:
        """In the transaction, under the body's lock: uploaded unless there, then the row counts it."""
        lock(db, body.sha)
        if not self._exists(body.sha):
            with open(body.source, "rb") as source:
                self.client.put_object(Bucket=self.bucket, Key=self.key(body.sha), Body=source,
                                       ContentLength=body.size)
        db.execute("INSERT INTO blobs (sha, size, refs) VALUES (%s, %s, 1)"
                   " ON CONFLICT (sha) DO UPDATE SET refs = blobs.refs + 1", (body.sha, body.size))

    def discard(self, body: Body) -> None:
        """The staged message is its owner's to remove."""

    def _exists(self, sha: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(sha))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _delete(self, sha: str) -> bool:
        if not self._exists(sha):
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha))
        return True

    def _open(self, sha: str, size: int):
        return io.BufferedReader(_S3Reader(self, self.key(sha), size), CHUNK)

    def sweep(self, store, max_age: float) -> int:
        """Remove objects no row names, not written for ``max_age`` seconds; how many went."""
        cutoff = time.time() - max_age
        removed = 0
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            old = [item["Key"].rsplit("/", 1)[-1] for item in page.get("Contents", ())
                   if item["LastModified"].timestamp() < cutoff and item["Key"] == self.key(item["Key"][-64:])]
            removed += self._orphans(store, old)
        return removed


class _S3Reader(io.RawIOBase):
    """An object read by ranged GETs from where it was sought (FETCH streams and seeks)."""

    def __init__(self, blobs: S3Blobs, key: str, size: int):
        self.blobs, self.key, self.size, self.position = blobs, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.size - self.position)
        if want <= 0:
            return 0
        answer = self.blobs.client.get_object(Bucket=self.blobs.bucket, Key=self.key,
                                              Range=f"bytes={self.position}-{self.position + want - 1}")
        data = answer["Body"].read()
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


def _older(entry: os.DirEntry, cutoff: float) -> bool:
    try:
        return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:
        return False
