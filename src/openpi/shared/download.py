"""Mirror remote checkpoints and assets (s3://, gs://, http(s)://) into a local cache: atomic, locked, offline-capable."""

from collections.abc import Callable, Iterator
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import socket
import threading
import time
from typing import Any, TypeVar
import urllib.parse
import urllib.request
import uuid

import filelock
import fsspec
import fsspec.callbacks
import tqdm

from openpi.shared import fileio as _fileio

logger = logging.getLogger(__name__)

DATA_HOME_ENV = "OPENPI_DATA_HOME"
OFFLINE_ENV = "OPENPI_OFFLINE"
RETRIES_ENV = "OPENPI_DOWNLOAD_RETRIES"
DEFAULT_CACHE_DIR = "~/.cache/openpi"

_DEFAULT_ATTEMPTS = 5
# Long enough for a slow link to complete a TCP handshake; short enough that an offline machine hears so at once.
_CONNECT_TIMEOUT_S = 5.0
_READ_TIMEOUT_S = 60.0  # silence on an open connection longer than this counts as a dropped transfer
_MAX_BACKOFF_S = 30.0
_PROGRESS_MIN_BYTES = 1 << 20
_PARALLEL_FILES = 8
# Errors that another attempt cannot fix: the object is missing, access is denied, or the request is malformed.
_NOT_RETRYABLE = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    ValueError,
    TypeError,
    NotImplementedError,
)


_T = TypeVar("_T")


class DownloadError(OSError):
    """A remote read kept failing after every retry."""


class OfflineCacheMissError(FileNotFoundError):
    """Offline mode is on and the requested URL is not complete in the cache."""


class UnreachableError(DownloadError):
    """The requested URL is not complete in the cache and no connection to the server holding it can be made."""


@dataclasses.dataclass(frozen=True)
class _RemoteFile:
    rel: str  # path below the requested URL, "/"-separated; "" when the URL names a single file
    path: str  # path as the filesystem names it
    size: int | None  # None when the server does not say
    version: str  # ETag, generation or modification time: changes when the object changes


def get_cache_dir() -> pathlib.Path:
    """The download cache root: `$OPENPI_DATA_HOME`, default `~/.cache/openpi`; created if missing."""
    cache_dir = pathlib.Path(os.environ.get(DATA_HOME_ENV) or DEFAULT_CACHE_DIR).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir


def maybe_download(url: str, *, force_download: bool = False, **kwargs: Any) -> pathlib.Path:
    """Return a local path holding the file or directory at `url`, downloading it into the cache if needed.

    Local paths (plain or file://) are returned resolved. Remote URLs map to
    `$OPENPI_DATA_HOME/<bucket-or-host>/<path>`; an entry counts as cached only once its completion marker
    exists and its files have the recorded sizes, and a cache hit touches no network. Downloads go to a
    staging sibling and are renamed into place, under a file lock shared by all processes. With
    `OPENPI_OFFLINE=1` a cache miss raises `OfflineCacheMissError`; without it, a miss that cannot connect to the
    server raises `UnreachableError` within seconds, while transient failures of a working connection are retried
    with backoff (`OPENPI_DOWNLOAD_RETRIES` attempts, default 5). `kwargs` go to the fsspec filesystem,
    either flat (`endpoint_url=...`) or per protocol (`s3={"anon": False}`).
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        return _existing_local_path(url, parsed)

    cache_dir = get_cache_dir()
    local_path = _cache_path(url, parsed, cache_dir)
    if not force_download and _is_cached(local_path, cache_dir):
        return local_path
    if _offline():
        raise _offline_miss(url, local_path)

    local_path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(_sibling(local_path, "lock"), url):
        # Another process may have finished the same download while we waited for the lock.
        if force_download or not _is_complete(local_path):
            _download(url, parsed.scheme, local_path, kwargs)
    return local_path


def _existing_local_path(url: str, parsed: urllib.parse.ParseResult) -> pathlib.Path:
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"url: expected file:///absolute/path for a local file, got {url!r}")
        path = pathlib.Path(urllib.parse.unquote(parsed.path))
    else:
        path = pathlib.Path(url).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{url}: no such local file or directory ({path.absolute()})")
    return path.resolve()


def _cache_path(url: str, parsed: urllib.parse.ParseResult, cache_dir: pathlib.Path) -> pathlib.Path:
    parts = [parsed.netloc, *(part for part in parsed.path.split("/") if part)]
    if not parsed.netloc or any(part in (".", "..") for part in parts):
        raise ValueError(f"url: expected <scheme>://<bucket-or-host>/<path> without '.' or '..' segments, got {url!r}")
    return cache_dir.joinpath(*parts)


def _sibling(path: pathlib.Path, kind: str) -> pathlib.Path:
    """Bookkeeping files live next to the entry as hidden `.<name>.<kind>` so they never mix with its content."""
    return path.with_name(f".{path.name}.{kind}")


def _is_cached(local_path: pathlib.Path, cache_dir: pathlib.Path) -> bool:
    """Purely local check: the entry itself is complete, or it lies inside a completely downloaded directory."""
    if _is_complete(local_path):
        return True
    for ancestor in local_path.parents:
        if ancestor == cache_dir:
            return False
        if _is_complete(ancestor):
            return local_path.exists()
    return False


def _is_complete(local_path: pathlib.Path) -> bool:
    try:
        recorded = json.loads(_sibling(local_path, "complete").read_text())["files"]
        return all(_has_size(local_path / rel, size) for rel, size in recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _has_size(path: pathlib.Path, size: int | None) -> bool:
    return path.is_file() and (size is None or path.stat().st_size == size)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _cache_state(local_path: pathlib.Path) -> str:
    return f"{local_path} {'is incomplete' if local_path.exists() else 'does not exist'}"


def _offline_miss(url: str, local_path: pathlib.Path) -> OfflineCacheMissError:
    return OfflineCacheMissError(
        f"{url}: not in the download cache ({_cache_state(local_path)}) and {OFFLINE_ENV}="
        f"{os.environ.get(OFFLINE_ENV)} forbids network access; unset {OFFLINE_ENV} to download it, or copy a "
        f"complete download there together with its {_sibling(local_path, 'complete').name} marker"
    )


@contextlib.contextmanager
def _locked(lock_path: pathlib.Path, url: str) -> Iterator[None]:
    lock = filelock.FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        logger.info("Waiting for another process downloading %s (lock %s)", url, lock_path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _download(url: str, scheme: str, local_path: pathlib.Path, kwargs: dict[str, Any]) -> None:
    fs, root = _filesystem(url, scheme, kwargs)
    _require_connection(fs, scheme, url, local_path)
    with _naming_url(url):
        listing = _with_retries(f"listing {url}", _list_remote, fs, root, url)
    fingerprint = hashlib.sha256(json.dumps([dataclasses.astuple(f) for f in listing]).encode()).hexdigest()[:16]
    # The staging name depends on the remote listing, so files finished by an interrupted attempt are reused
    # only while the remote content is unchanged.
    staging = _sibling(local_path, f"partial-{fingerprint}")
    _remove_leftovers(local_path, keep=staging)
    tree, incoming = staging / "tree", staging / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)

    pending = [(index, f) for index, f in enumerate(listing) if not _has_size(tree / f.rel, f.size)]
    total = sum(f.size or 0 for _, f in pending)
    resumed = f", resuming with {len(listing) - len(pending)} already done" if len(pending) < len(listing) else ""
    logger.info("Downloading %s (%d files, %d bytes%s) to %s", url, len(pending), total, resumed, local_path)
    with _Progress(total, local_path.name) as progress:

        def fetch(index: int, remote: _RemoteFile) -> None:
            remote_url = fs.unstrip_protocol(remote.path)
            with _naming_url(remote_url):
                _with_retries(
                    f"downloading {remote_url}",
                    _fetch_file,
                    fs,
                    remote,
                    incoming / f"{index}.part",
                    tree / remote.rel,
                    progress,
                )

        _run_all(fetch, pending)
    _publish(tree, local_path, url, listing)
    shutil.rmtree(staging)


def _filesystem(url: str, scheme: str, kwargs: dict[str, Any]) -> tuple[fsspec.AbstractFileSystem, str]:
    options = _default_options(scheme)
    per_protocol = kwargs.get(scheme)
    if isinstance(per_protocol, dict):
        options.update(per_protocol)
    options.update({key: value for key, value in kwargs.items() if key != scheme})
    try:
        fs = _filesystem_class(scheme)(**options)
    except (ValueError, ImportError) as err:
        raise ValueError(f"url: unsupported scheme {scheme!r} in {url!r} ({err})") from err
    fs.invalidate_cache()  # filesystem instances are shared; never trust a listing from an earlier call
    return fs, type(fs)._strip_protocol(url)


def _filesystem_class(scheme: str) -> type[fsspec.AbstractFileSystem]:
    if scheme in ("gs", "gcs"):
        # gcsfs now defaults to a subclass that first asks a gRPC control API for the bucket layout, which can
        # stall for a minute where that API is unreachable; the plain JSON-API filesystem is all public
        # buckets need.
        import gcsfs.core

        return gcsfs.core.GCSFileSystem
    return fsspec.get_filesystem_class(scheme)


def _default_options(scheme: str) -> dict[str, Any]:
    """Anonymous access unless credentials are configured, so public buckets work without probing for any; time
    limits on connecting and on a silent transfer; no retries inside botocore, since `_with_retries` is the one
    retry layer (s3fs still resumes a dropped object read, and gcsfs always retries a few times on its own)."""
    if scheme in ("s3", "s3a"):
        options: dict[str, Any] = {
            "anon": not _has_aws_credentials(),
            "config_kwargs": {"connect_timeout": _CONNECT_TIMEOUT_S, "retries": {"total_max_attempts": 1}},
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["endpoint_url"] = endpoint
        return options
    if scheme in ("gs", "gcs"):
        options = {"requests_timeout": _aiohttp_timeout()}
        if not _has_google_credentials():
            options["token"] = "anon"
        return options
    if scheme in ("http", "https"):
        return {"client_kwargs": {"timeout": _aiohttp_timeout()}}
    return {}


def _aiohttp_timeout() -> Any:
    """No limit on a whole transfer (checkpoints are large), only on opening a socket and on silence while reading;
    waiting for a free pooled connection is not limited either, as parallel transfers may queue for long."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S, sock_read=_READ_TIMEOUT_S)


def _has_aws_credentials() -> bool:
    variables = (
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )
    shared_file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return any(os.environ.get(name) for name in variables) or pathlib.Path(shared_file).expanduser().is_file()


def _has_google_credentials() -> bool:
    gcloud_dir = pathlib.Path(os.environ.get("CLOUDSDK_CONFIG") or "~/.config/gcloud").expanduser()
    return (
        bool(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))
        or (gcloud_dir / "application_default_credentials.json").is_file()
    )


def _require_connection(fs: fsspec.AbstractFileSystem, scheme: str, url: str, local_path: pathlib.Path) -> None:
    """Fail at once, naming the ways out, when no TCP connection to the server can be made (offline, a wrong
    endpoint, an unresolvable host): the store clients would otherwise retry for minutes before giving up."""
    server = _server(fs, scheme, url)
    if server is None:
        return
    first_hop = _first_hop(fs, scheme, server)
    parts = urllib.parse.urlsplit(first_hop)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    problem = _connection_problem(host, port)
    if problem is None:
        return
    through = f" (the proxy for {server})" if first_hop != server else ""
    raise UnreachableError(
        f"{url}: not in the download cache ({_cache_state(local_path)}) and no connection to {host}:{port}{through} "
        f"could be made ({problem}). To work offline, fill the cache on a connected machine, or copy a complete "
        f"download to {local_path} together with its {_sibling(local_path, 'complete').name} marker "
        f"({DATA_HOME_ENV} sets where the cache is), and set {OFFLINE_ENV}=1 to never touch the network; "
        f"otherwise check this machine's network access and the store's endpoint"
    )


def _server(fs: fsspec.AbstractFileSystem, scheme: str, url: str) -> str | None:
    """The URL of the server that requests for `url` go to; None for stores other than s3, gs and http(s)."""
    if scheme in ("s3", "s3a"):
        fs.connect()  # builds the botocore client, which resolves the (regional or configured) endpoint offline
        return fs.s3.meta.endpoint_url
    if scheme in ("gs", "gcs"):
        return fs.base  # honours STORAGE_EMULATOR_HOST and endpoint_url
    if scheme in ("http", "https"):
        return url
    return None


def _first_hop(fs: fsspec.AbstractFileSystem, scheme: str, server: str) -> str:
    """Where the first connection goes: botocore sends s3 requests through the proxy configured for it or named in
    the environment (HTTP_PROXY, HTTPS_PROXY, NO_PROXY); fsspec's http and gcsfs's sessions connect directly."""
    if scheme not in ("s3", "s3a"):
        return server
    parts = urllib.parse.urlsplit(server)
    proxies = fs.s3.meta.config.proxies
    if not proxies and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxies = urllib.request.getproxies()
    proxy = (proxies or {}).get(parts.scheme)
    if not proxy:
        return server
    return proxy if "://" in proxy else f"http://{proxy}"


def _connection_problem(host: str, port: int) -> str | None:
    """Why no TCP connection to `host:port` opens within `_CONNECT_TIMEOUT_S` (name lookup included), or None."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    # A thread, because a name lookup cannot be given a timeout and may hang while the resolver is unreachable.
    attempt = threading.Thread(target=connect, name=f"connect {host}:{port}", daemon=True)
    attempt.start()
    attempt.join(_CONNECT_TIMEOUT_S)
    return outcome[0] if outcome else f"no connection within {_CONNECT_TIMEOUT_S:.0f} s"


def _list_remote(fs: fsspec.AbstractFileSystem, root: str, url: str) -> list[_RemoteFile]:
    info = fs.info(root)
    is_directory = info["type"] == "directory" or (info.get("size") == 0 and info["name"].endswith("/"))
    if not is_directory:
        return [_RemoteFile("", root, info.get("size"), _version(info))]

    prefix = root.rstrip("/") + "/"
    files = []
    for name, entry in sorted(fs.find(root, detail=True).items()):
        if entry["type"] != "file" or name.endswith("/"):  # zero-byte "folder" objects
            continue
        rel = name[len(prefix) :] if name.startswith(prefix) else ""
        if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
            raise ValueError(f"{url}: listing returned {name!r}, which is not a plain path below {root!r}")
        files.append(_RemoteFile(rel, name, entry.get("size"), _version(entry)))
    if not files:
        raise FileNotFoundError("the directory holds no files")
    return files


@contextlib.contextmanager
def _naming_url(url: str) -> Iterator[None]:
    """Re-raise the store's terse not-found / access-denied errors with the URL they concern."""
    try:
        yield
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{url}: no such remote file or directory ({err})") from err
    except PermissionError as err:
        raise PermissionError(
            f"{url}: access denied ({err}); anonymous access is used unless credentials are set in the environment"
        ) from err


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "md5Hash", "LastModified", "Last-Modified", "mtime", "updated"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _with_retries(what: str, fn: Callable[..., _T], *args: Any) -> _T:
    attempts = _attempts()
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args)
        except Exception as err:
            if not _is_transient(err):
                raise
            if attempt == attempts:
                raise DownloadError(
                    f"{what}: failed after {attempts} attempts ({RETRIES_ENV}); last error: {_describe(err)}"
                ) from err
            delay = min(2.0 ** (attempt - 1), _MAX_BACKOFF_S)
            logger.warning("%s failed (%s); retrying in %.0f s", what, _describe(err), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_transient(err: BaseException) -> bool:
    """Network trouble and server-side errors are worth another attempt; missing objects and bad requests are not."""
    status = _http_status(err)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if isinstance(err, FileNotFoundError):
        # fsspec's http store reports any failed probe, even a refused connection, as "not found".
        cause = err.__cause__
        return cause is not None and not isinstance(cause, FileNotFoundError) and _is_transient(cause)
    return not isinstance(err, _NOT_RETRYABLE)


def _http_status(err: BaseException) -> int | None:
    """The HTTP status behind an error, from aiohttp (`status`) or botocore (`response`), or from its cause."""
    status = getattr(err, "status", None)
    if isinstance(status, int):
        return status
    response = getattr(err, "response", None)
    if isinstance(response, dict) and isinstance(response.get("ResponseMetadata", {}).get("HTTPStatusCode"), int):
        return response["ResponseMetadata"]["HTTPStatusCode"]
    return None


def _describe(err: BaseException) -> str:
    cause = f" (from {type(err.__cause__).__name__}: {err.__cause__})" if err.__cause__ is not None else ""
    return f"{type(err).__name__}: {err}{cause}"


def _attempts() -> int:
    raw = os.environ.get(RETRIES_ENV)
    if raw is None:
        return _DEFAULT_ATTEMPTS
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"{RETRIES_ENV}: expected a positive number of attempts, got {raw!r}")
    return int(raw)


def _fetch_file(
    fs: fsspec.AbstractFileSystem,
    remote: _RemoteFile,
    part: pathlib.Path,
    final: pathlib.Path,
    progress: "_Progress",
) -> None:
    """One attempt at one file: stream into `part`, check the size, then rename to `final`."""
    counter = _ByteCounter(progress)
    try:
        fs.get_file(remote.path, str(part), callback=counter)
        received = part.stat().st_size
        if remote.size is not None and received != remote.size:
            raise OSError(f"transfer ended after {received} of {remote.size} bytes")
    except BaseException:
        counter.rewind()
        raise
    _fileio.fsync_file(part)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)


def _run_all(fetch: Callable[[int, _RemoteFile], None], pending: list[tuple[int, _RemoteFile]]) -> None:
    if len(pending) <= 1:
        for index, remote in pending:
            fetch(index, remote)
        return
    with concurrent.futures.ThreadPoolExecutor(min(_PARALLEL_FILES, len(pending))) as pool:
        futures = [pool.submit(fetch, index, remote) for index, remote in pending]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _publish(tree: pathlib.Path, local_path: pathlib.Path, url: str, listing: list[_RemoteFile]) -> None:
    """Swap the finished tree into place, then write the marker; a crash in between leaves an unmarked entry."""
    marker = _sibling(local_path, "complete")
    marker.unlink(missing_ok=True)
    if local_path.exists() or local_path.is_symlink():
        # A stale or forcibly replaced entry: move it aside in one rename rather than deleting it in place.
        trash = _sibling(local_path, f"trash-{uuid.uuid4().hex}")
        os.replace(local_path, trash)
    else:
        trash = None
    os.replace(tree, local_path)
    pending_marker = _sibling(local_path, f"complete.tmp-{uuid.uuid4().hex}")
    with open(pending_marker, "w") as out:
        json.dump({"url": url, "files": {f.rel: f.size for f in listing}}, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(pending_marker, marker)
    _fsync_directory(local_path.parent)
    if trash is not None:
        _remove(trash)


def _remove_leftovers(local_path: pathlib.Path, keep: pathlib.Path) -> None:
    """Delete staging trees of other remote versions, moved-aside entries and half-written markers."""
    prefixes = tuple(f".{local_path.name}.{kind}" for kind in ("partial-", "trash-", "complete.tmp-"))
    for entry in local_path.parent.iterdir():
        if entry.name.startswith(prefixes) and entry != keep:
            _remove(entry)


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_directory(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _Progress:
    """Byte-count progress bar shared by parallel file transfers; silent when stderr is not a TTY."""

    def __init__(self, total_bytes: int, label: str):
        self._lock = threading.Lock()
        self._bar = tqdm.tqdm(
            total=total_bytes,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=None if total_bytes >= _PROGRESS_MIN_BYTES else True,
        )

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.close()

    def update(self, num_bytes: int) -> None:
        with self._lock:
            self._bar.update(num_bytes)


class _ByteCounter(fsspec.callbacks.Callback):
    """fsspec transfer callback that forwards byte increments to a `_Progress` and can undo them on retry."""

    def __init__(self, progress: _Progress):
        super().__init__()
        self._progress = progress
        self._reported = 0

    def call(self, hook_name: str | None = None, **kwargs: Any) -> None:
        self._progress.update(self.value - self._reported)
        self._reported = self.value

    def rewind(self) -> None:
        self._progress.update(-self._reported)
        self._reported = 0
