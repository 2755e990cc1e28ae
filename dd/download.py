"""Fetch a published checkpoint over HTTP: resumable, retried, verified, and complete or absent.

The file is written to DEST.part and renamed onto DEST only once every byte is there and, when an expected
sha256 is given, the checksum matches: a later stage can never take a partial or wrong file for a
checkpoint. A rerun after an interruption (network drop, killed process) asks the server for the missing
bytes only (an HTTP Range request) and falls back to a fresh start when the server ignores ranges.

Transient failures (connection refused or reset, timeouts, HTTP 5xx, a body cut short) are retried with
exponential backoff; errors that retrying cannot fix (HTTP 4xx: wrong URL, no access) fail at once. Every
failure is a DownloadError naming the URL, what went wrong and what to do about it.

Only the standard library does the HTTP (urllib): no new dependency for one GET with a Range header.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from dd.progress import progress_bar

CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A download that did not produce a complete, verified file; the message says why and what to do."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the sha256 given in params."""


def partial_path(destination: Path) -> Path:
    return destination.with_name(destination.name + ".part")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: str | Path, sha256: str | None = None, retries: int = 5,
             backoff_seconds: float = 2.0, timeout_seconds: float = 60.0, progress: bool = True) -> Path:
    """Download `url` to `destination` (returned) unless a verified copy is already there.

    sha256: the expected hex digest, checked before the file is renamed into place (and on an existing file).
    retries: further attempts after a transient failure, waiting backoff_seconds * 2**attempt in between.
    """
    destination = Path(destination)
    if destination.exists():
        if sha256 is None or sha256_of(destination) == sha256.lower():
            return destination
        raise ChecksumError(f"{destination} exists but its sha256 is not {sha256}: delete it to download {url} "
                            "again, or correct the sha256 in params.yaml")
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(destination)

    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout_seconds, progress)
            break
        except _Permanent as error:
            raise DownloadError(f"{url}: {error}. Check the URL (teacher.url in params.yaml) and that the file is "
                                "public; nothing was written") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError, _Truncated) as error:
            if attempt == retries:
                raise DownloadError(
                    f"{url}: {_reason(error)} after {retries + 1} attempts. If this machine is offline, download the "
                    f"file elsewhere and place it at {destination}; {part} keeps {_size(part)} bytes, and a rerun "
                    "resumes from there") from None
            time.sleep(backoff_seconds * 2**attempt)

    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise ChecksumError(f"{url}: sha256 {actual} does not match the expected {sha256}; the download was "
                                "deleted. The file on the server changed or the sha256 in params.yaml is wrong")
    os.replace(part, destination)
    return destination


class _Permanent(Exception):
    """A failure that retrying cannot fix (HTTP 4xx)."""


class _Truncated(Exception):
    """The server closed the connection before sending every byte it announced."""


def _fetch_into(url: str, part: Path, timeout_seconds: float, progress: bool) -> None:
    """One attempt: append the bytes `part` is missing (or start it afresh) until the body is complete."""
    have = _size(part)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_seconds)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:   # the range starts at or past the end: the partial file is unusable
            part.unlink()
            raise _Truncated("the server rejected the resume range; starting afresh") from None
        if 400 <= error.code < 500:
            raise _Permanent(f"HTTP {error.code} {error.reason}") from None
        raise
    with response:
        status = getattr(response, "status", None) or 200          # file:// responses carry no status
        resumed = status == 206
        if not resumed:
            have = 0                                                 # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as handle, \
                progress_bar(f"download {Path(part).name[:-5]}", total or 0, enabled=progress and bool(total)) as advance:
            advance(have)
            for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(block)
                advance(len(block))
    if total is not None and _size(part) < total:
        raise _Truncated(f"connection closed after {_size(part)} of {total} bytes")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return f"cannot reach the server ({error.reason})"
    return str(error) or type(error).__name__
