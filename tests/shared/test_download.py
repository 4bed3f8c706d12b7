"""maybe_download against real local servers: moto's S3 server and a controllable http.server."""

import collections
from collections.abc import Iterator
import contextlib
import http.server
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import pytest

from openpi.shared import download

REFERENCE_CKPT = pathlib.Path(__file__).parents[1] / "fixtures" / "pi0_tiny_openpi_ckpt"
_SUBPROCESS_TIMEOUT_S = 60
_DOWNLOAD_IN_SUBPROCESS = (
    "import logging, sys; logging.basicConfig(level=logging.INFO); "
    "from openpi.shared import download; print(download.maybe_download(sys.argv[1]))"
)


class _FileServer(http.server.ThreadingHTTPServer):
    """Serves in-memory files over plain HTTP and a GCS JSON-API subset (for gs:// via STORAGE_EMULATOR_HOST).

    GETs of a path can be made to fail with 503 a number of times, to be cut off half way a number of times, or to
    stall after some bytes until `release`.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.files: dict[str, bytes] = {}
        self.failures_left: collections.Counter[str] = collections.Counter()
        self.cuts_left: collections.Counter[str] = collections.Counter()
        self.gets: collections.Counter[str] = collections.Counter()
        self.stall_after_bytes: dict[str, int] = {}  # path -> bytes sent before the GET stalls
        self.stalled = threading.Event()
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients killed mid-transfer are expected
            super().handle_error(request, client_address)


class _FileHandler(http.server.BaseHTTPRequestHandler):
    server: _FileServer
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def _respond(self, send_body: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/storage/v1/b/"):
            self._gcs_metadata(url)
            return
        # GCS media downloads map onto the plain files: /download/storage/v1/b/<bucket>/o/<quoted key>.
        path = self._gcs_media_path(url) if url.path.startswith("/download/storage/v1/b/") else self.path
        data = self.server.files.get(path)
        if data is None:
            self.send_error(404)
            return
        if send_body:
            self.server.gets[path] += 1
            if self.server.failures_left[path] > 0:
                self.server.failures_left[path] -= 1
                self.send_error(503)
                return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not send_body:
            return
        if self.server.cuts_left[path] > 0:
            self.server.cuts_left[path] -= 1
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        stall_at = self.server.stall_after_bytes.get(path)
        if stall_at is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[:stall_at])
        self.wfile.flush()
        self.server.stalled.set()
        self.server.release.wait()
        self.wfile.write(data[stall_at:])

    def _gcs_media_path(self, url: urllib.parse.SplitResult) -> str:
        bucket, _, key = url.path.removeprefix("/download/storage/v1/b/").partition("/o/")
        return f"/{bucket}/{urllib.parse.unquote(key)}"

    def _gcs_metadata(self, url: urllib.parse.SplitResult) -> None:
        """The slice of the GCS JSON API that gcsfs uses to stat and list objects."""
        bucket, _, key = url.path.removeprefix("/storage/v1/b/").partition("/o")
        objects = {
            path.removeprefix(f"/{bucket}/"): data
            for path, data in self.server.files.items()
            if path.startswith(f"/{bucket}/")
        }

        def describe(name: str) -> dict[str, str]:
            return {
                "kind": "storage#object",
                "bucket": bucket,
                "name": name,
                "size": str(len(objects[name])),
                "generation": "1",
                "updated": "2025-01-01T00:00:00.000Z",
            }

        if key.startswith("/"):
            name = urllib.parse.unquote(key[1:])
            body = describe(name) if name in objects else None
        else:
            query = urllib.parse.parse_qs(url.query)
            prefix, delimiter = query.get("prefix", [""])[0], query.get("delimiter", [""])[0]
            items, prefixes = [], set()
            for name in sorted(objects):
                if not name.startswith(prefix):
                    continue
                rest = name[len(prefix) :]
                if delimiter and delimiter in rest:
                    prefixes.add(prefix + rest.split(delimiter)[0] + delimiter)
                else:
                    items.append(describe(name))
            body = {"kind": "storage#objects", "items": items, "prefixes": sorted(prefixes)}
        if body is None:
            self.send_error(404)
            return
        encoded = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_files() -> Iterator[_FileServer]:
    server = _FileServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def published_checkpoint(s3_server) -> str:
    """s3://openpi-assets/checkpoints/pi0_tiny holding the reference checkpoint, readable by anyone."""
    return s3_server.publish_directory(REFERENCE_CKPT, "openpi-assets", "checkpoints/pi0_tiny")


@pytest.fixture
def public_checkpoint(published_checkpoint: str, anonymous_s3) -> str:
    """The published reference checkpoint, with the code under test pointed at the S3 server anonymously."""
    return published_checkpoint


@pytest.fixture
def scratch_bucket(anonymous_s3) -> str:
    name = f"scratch-{uuid.uuid4().hex[:12]}"
    anonymous_s3.admin.create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def isolated_env(no_cloud_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    for name in ("OPENPI_OFFLINE", "OPENPI_DOWNLOAD_RETRIES"):
        monkeypatch.delenv(name, raising=False)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cut_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point S3 at a closed port and allow one attempt: any network access now fails at once."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_unused_port()}")
    monkeypatch.setenv("OPENPI_DOWNLOAD_RETRIES", "1")


def _use_http_proxy(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    """Names `proxy` for http:// requests in the environment, with no exceptions."""
    for name in ("http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)


def _tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def _staged_files(local: pathlib.Path) -> list[pathlib.Path]:
    """Files an unfinished download of `local` has completed so far."""
    return [path for path in local.parent.glob(f".{local.name}.partial-*/tree/**/*") if path.is_file()]


def _start_download(url: str, stderr_path: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _DOWNLOAD_IN_SUBPROCESS, url],
        stdout=subprocess.PIPE,
        stderr=stderr_path.open("w"),
        text=True,
        env=os.environ.copy(),
    )


@contextlib.contextmanager
def _download_killed_at_exit(url: str, stderr_path: pathlib.Path, http_files: _FileServer) -> Iterator[None]:
    """Downloads `url` in a subprocess that is killed when the block ends; then the server stops stalling."""
    process = _start_download(url, stderr_path)
    try:
        yield
    finally:
        process.kill()
        process.wait(_SUBPROCESS_TIMEOUT_S)
    http_files.stall_after_bytes.clear()
    http_files.release.set()


def _wait_for(condition, what: str, timeout_s: float = _SUBPROCESS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_local_paths_pass_through_resolved(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "ckpt"
    target.mkdir()
    monkeypatch.chdir(tmp_path)

    assert download.maybe_download("ckpt") == target.resolve()
    assert download.maybe_download(str(target)) == target.resolve()
    assert download.maybe_download(target.as_uri()) == target.resolve()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_missing_local_path_raises_file_not_found_naming_it(tmp_path: pathlib.Path):
    missing = tmp_path / "nope" / "params"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        download.maybe_download(str(missing))
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        download.maybe_download(missing.as_uri())


def test_cache_dir_follows_openpi_data_home_and_defaults_to_home_cache(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    assert download.get_cache_dir() == (tmp_path / "cache").resolve()
    assert (tmp_path / "cache").is_dir()

    monkeypatch.delenv("OPENPI_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.get_cache_dir() == (tmp_path / "home" / ".cache" / "openpi").resolve()


@pytest.mark.parametrize("url", ["s3://openpi-assets/a/../b", "s3:///no-bucket/x", "s3://../x"])
def test_urls_that_could_escape_the_cache_are_rejected(url: str):
    with pytest.raises(ValueError, match="bucket-or-host"):
        download.maybe_download(url)


def test_s3_file_is_mirrored_under_bucket_and_key(public_checkpoint: str, tmp_path: pathlib.Path):
    url = f"{public_checkpoint}/assets/tiny_example/norm_stats.json"

    local = download.maybe_download(url)

    expected = tmp_path / "cache" / "openpi-assets" / "checkpoints" / "pi0_tiny" / "assets" / "tiny_example"
    assert local == (expected / "norm_stats.json").resolve()
    assert local.read_bytes() == (REFERENCE_CKPT / "assets" / "tiny_example" / "norm_stats.json").read_bytes()


def test_s3_directory_download_mirrors_the_whole_checkpoint(public_checkpoint: str, tmp_path: pathlib.Path):
    local = download.maybe_download(f"{public_checkpoint}/params")

    assert local == (tmp_path / "cache" / "openpi-assets" / "checkpoints" / "pi0_tiny" / "params").resolve()
    assert _tree_bytes(local) == _tree_bytes(REFERENCE_CKPT / "params")
    leftovers = sorted(p.name for p in local.parent.iterdir())
    assert leftovers == [".params.complete", ".params.lock", "params"]


def test_cache_hit_makes_no_network_access(public_checkpoint: str, monkeypatch: pytest.MonkeyPatch):
    first = download.maybe_download(f"{public_checkpoint}/params")
    _cut_network(monkeypatch)

    assert download.maybe_download(f"{public_checkpoint}/params") == first
    assert _tree_bytes(first) == _tree_bytes(REFERENCE_CKPT / "params")


def test_path_inside_a_downloaded_directory_is_served_from_cache(
    public_checkpoint: str, monkeypatch: pytest.MonkeyPatch
):
    directory = download.maybe_download(public_checkpoint)
    _cut_network(monkeypatch)

    assert download.maybe_download(f"{public_checkpoint}/params/_METADATA") == directory / "params" / "_METADATA"


def test_endpoint_comes_from_generic_aws_endpoint_url(
    public_checkpoint: str, anonymous_s3, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", anonymous_s3.endpoint)

    local = download.maybe_download(f"{public_checkpoint}/params/_METADATA")
    assert local.read_bytes() == (REFERENCE_CKPT / "params" / "_METADATA").read_bytes()


@pytest.mark.parametrize("per_protocol", [False, True])
def test_keyword_arguments_configure_the_filesystem(
    public_checkpoint: str, anonymous_s3, monkeypatch: pytest.MonkeyPatch, per_protocol: bool
):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    endpoint = anonymous_s3.endpoint
    options = {"s3": {"endpoint_url": endpoint}} if per_protocol else {"endpoint_url": endpoint}

    local = download.maybe_download(f"{public_checkpoint}/params/_METADATA", **options)
    assert local.read_bytes() == (REFERENCE_CKPT / "params" / "_METADATA").read_bytes()


def test_private_objects_need_credentials_from_the_environment(
    anonymous_s3, scratch_bucket: str, monkeypatch: pytest.MonkeyPatch
):
    anonymous_s3.admin.put_object(Bucket=scratch_bucket, Key="private.bin", Body=b"secret weights")
    url = f"s3://{scratch_bucket}/private.bin"

    with pytest.raises(PermissionError, match=re.escape(f"{url}: access denied")):
        download.maybe_download(url)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert download.maybe_download(url).read_bytes() == b"secret weights"


def test_missing_s3_object_raises_file_not_found_naming_the_url(public_checkpoint: str):
    url = f"{public_checkpoint}/no_such_params"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{url}: no such remote file")):
        download.maybe_download(url)


@pytest.mark.usefixtures("anonymous_s3")
def test_missing_s3_bucket_raises_file_not_found_without_retrying():
    url = "s3://no-such-bucket-anywhere/checkpoints/params"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{url}: no such remote file")):
        download.maybe_download(url)


def test_missing_http_file_raises_file_not_found_naming_the_url(http_files: _FileServer):
    url = http_files.url("/missing.model")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{url}: no such remote file")):
        download.maybe_download(url)
    assert http_files.gets["/missing.model"] == 0


def test_http_file_is_mirrored_under_host_and_path(http_files: _FileServer, tmp_path: pathlib.Path):
    http_files.files["/big_vision/tokenizer.model"] = os.urandom(300_000)
    url = http_files.url("/big_vision/tokenizer.model")

    local = download.maybe_download(url)

    host = f"127.0.0.1:{http_files.server_address[1]}"
    assert local == (tmp_path / "cache" / host / "big_vision" / "tokenizer.model").resolve()
    assert local.read_bytes() == http_files.files["/big_vision/tokenizer.model"]


def test_force_download_replaces_the_cached_copy(anonymous_s3, scratch_bucket: str):
    s3_admin = anonymous_s3.admin
    url = f"s3://{scratch_bucket}/ckpt/weights.bin"
    s3_admin.put_object(Bucket=scratch_bucket, Key="ckpt/weights.bin", Body=b"v1", ACL="public-read")
    download.maybe_download(f"s3://{scratch_bucket}/ckpt")
    s3_admin.put_object(Bucket=scratch_bucket, Key="ckpt/weights.bin", Body=b"version 2", ACL="public-read")
    s3_admin.put_object(Bucket=scratch_bucket, Key="ckpt/extra.bin", Body=b"new", ACL="public-read")

    assert download.maybe_download(url).read_bytes() == b"v1"
    refreshed = download.maybe_download(f"s3://{scratch_bucket}/ckpt", force_download=True)

    assert _tree_bytes(refreshed) == {"weights.bin": b"version 2", "extra.bin": b"new"}
    assert sorted(p.name for p in refreshed.parent.iterdir()) == [".ckpt.complete", ".ckpt.lock", "ckpt"]


def test_entry_without_completion_marker_is_downloaded_again(public_checkpoint: str, tmp_path: pathlib.Path):
    url = f"{public_checkpoint}/params"
    stale = tmp_path / "cache" / "openpi-assets" / "checkpoints" / "pi0_tiny" / "params"
    stale.mkdir(parents=True)
    (stale / "_METADATA").write_text("half-written")

    local = download.maybe_download(url)

    assert _tree_bytes(local) == _tree_bytes(REFERENCE_CKPT / "params")


def test_cached_file_with_wrong_size_is_downloaded_again(public_checkpoint: str):
    url = f"{public_checkpoint}/params/_METADATA"
    local = download.maybe_download(url)
    local.write_bytes(local.read_bytes()[:10])

    assert download.maybe_download(url).read_bytes() == (REFERENCE_CKPT / "params" / "_METADATA").read_bytes()


def test_offline_mode_serves_the_cache_and_names_url_and_path_on_a_miss(
    public_checkpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
):
    cached = download.maybe_download(f"{public_checkpoint}/params")
    monkeypatch.setenv("OPENPI_OFFLINE", "1")

    assert download.maybe_download(f"{public_checkpoint}/params") == cached
    missing_url = f"{public_checkpoint}/assets"
    missing_path = tmp_path / "cache" / "openpi-assets" / "checkpoints" / "pi0_tiny" / "assets"
    with pytest.raises(
        download.OfflineCacheMissError, match=re.escape(f"{missing_url}: not in the download cache")
    ) as err:
        download.maybe_download(missing_url)
    assert str(missing_path.resolve()) in str(err.value)
    with pytest.raises(download.OfflineCacheMissError):
        download.maybe_download(f"{public_checkpoint}/params", force_download=True)


def test_transient_server_errors_are_retried(http_files: _FileServer):
    http_files.files["/flaky.bin"] = b"payload" * 1000
    http_files.failures_left["/flaky.bin"] = 1

    local = download.maybe_download(http_files.url("/flaky.bin"))

    assert local.read_bytes() == http_files.files["/flaky.bin"]
    assert http_files.gets["/flaky.bin"] == 2


def test_transfer_cut_off_half_way_is_retried(http_files: _FileServer):
    http_files.files["/cut.bin"] = os.urandom(200_000)
    http_files.cuts_left["/cut.bin"] = 1

    local = download.maybe_download(http_files.url("/cut.bin"))

    assert local.read_bytes() == http_files.files["/cut.bin"]
    assert http_files.gets["/cut.bin"] == 2


def test_persistent_server_errors_fail_after_the_configured_attempts(
    http_files: _FileServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENPI_DOWNLOAD_RETRIES", "2")
    http_files.files["/down.bin"] = b"weights"
    http_files.failures_left["/down.bin"] = 10
    url = http_files.url("/down.bin")

    with pytest.raises(download.DownloadError, match=re.escape(f"downloading {url}: failed after 2 attempts")):
        download.maybe_download(url)
    assert http_files.gets["/down.bin"] == 2


@pytest.mark.parametrize(
    ("endpoint_variable", "url"),
    [
        ("AWS_ENDPOINT_URL_S3", "s3://openpi-assets/checkpoints/pi0_base"),
        ("STORAGE_EMULATOR_HOST", "gs://big_vision/paligemma_tokenizer.model"),
        (None, "https://{endpoint}/big_vision/paligemma_tokenizer.model"),
    ],
)
def test_server_refusing_connections_fails_within_seconds_naming_the_ways_out(
    endpoint_variable: str | None, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
):
    endpoint = f"127.0.0.1:{_unused_port()}"
    if endpoint_variable is not None:
        monkeypatch.setenv(endpoint_variable, f"http://{endpoint}")
    url = url.format(endpoint=endpoint)
    parsed = urllib.parse.urlsplit(url)
    cache_path = (tmp_path / "cache").resolve() / parsed.netloc / parsed.path.lstrip("/")

    started = time.monotonic()
    with pytest.raises(download.UnreachableError) as err:
        download.maybe_download(url)
    # Without the fast path this takes minutes: retries of ours, times those of botocore or gcsfs.
    assert time.monotonic() - started < 10
    message = str(err.value)
    assert message.startswith(f"{url}: not in the download cache ({cache_path} does not exist)")
    assert f"no connection to {endpoint} could be made (ConnectionRefusedError" in message
    assert "OPENPI_OFFLINE=1" in message
    assert "OPENPI_DATA_HOME" in message


def test_s3_through_a_proxy_downloads_though_the_endpoint_is_not_directly_reachable(
    anonymous_s3, scratch_bucket: str, monkeypatch: pytest.MonkeyPatch
):
    anonymous_s3.admin.put_object(Bucket=scratch_bucket, Key="ckpt/weights.bin", Body=b"proxied", ACL="public-read")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_unused_port()}")
    # moto's server also answers requests in a forward proxy's form (GET http://host/path).
    _use_http_proxy(monkeypatch, anonymous_s3.endpoint)

    assert download.maybe_download(f"s3://{scratch_bucket}/ckpt/weights.bin").read_bytes() == b"proxied"


def test_s3_behind_a_proxy_refusing_connections_fails_within_seconds_naming_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
):
    endpoint, proxy = f"http://127.0.0.1:{_unused_port()}", f"127.0.0.1:{_unused_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    _use_http_proxy(monkeypatch, f"http://{proxy}")

    started = time.monotonic()
    with pytest.raises(
        download.UnreachableError, match=re.escape(f"no connection to {proxy} (the proxy for {endpoint})")
    ):
        download.maybe_download("s3://openpi-assets/checkpoints/pi0_base")
    assert time.monotonic() - started < 10


def test_invalid_retry_setting_is_rejected_by_name(http_files: _FileServer, monkeypatch: pytest.MonkeyPatch):
    http_files.files["/a.bin"] = b"a"
    monkeypatch.setenv("OPENPI_DOWNLOAD_RETRIES", "many")
    with pytest.raises(ValueError, match="OPENPI_DOWNLOAD_RETRIES: expected a positive number"):
        download.maybe_download(http_files.url("/a.bin"))


@pytest.mark.slow
def test_download_killed_mid_transfer_leaves_no_complete_entry_and_retry_succeeds(
    http_files: _FileServer, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
):
    payload = os.urandom(3 << 20)
    http_files.files["/ckpt/weights.bin"] = payload
    http_files.stall_after_bytes["/ckpt/weights.bin"] = len(payload) // 2
    url = http_files.url("/ckpt/weights.bin")

    local = tmp_path / "cache" / f"127.0.0.1:{http_files.server_address[1]}" / "ckpt" / "weights.bin"
    with _download_killed_at_exit(url, tmp_path / "stderr.txt", http_files):
        _wait_for(http_files.stalled.is_set, "the transfer to reach half way")
        _wait_for(lambda: any(local.parent.glob(".weights.bin.partial-*/incoming/*.part")), "a partial file")

    assert not local.exists()
    monkeypatch.setenv("OPENPI_OFFLINE", "1")
    with pytest.raises(download.OfflineCacheMissError, match="does not exist"):
        download.maybe_download(url)
    monkeypatch.delenv("OPENPI_OFFLINE")

    assert download.maybe_download(url).read_bytes() == payload
    assert sorted(p.name for p in local.parent.iterdir()) == [
        ".weights.bin.complete",
        ".weights.bin.lock",
        "weights.bin",
    ]


@pytest.mark.slow
def test_concurrent_downloaders_share_one_transfer(http_files: _FileServer, tmp_path: pathlib.Path):
    payload = os.urandom(1 << 20)
    http_files.files["/shared/model.bin"] = payload
    http_files.stall_after_bytes["/shared/model.bin"] = 1000
    url = http_files.url("/shared/model.bin")

    stderr_paths = [tmp_path / "stderr-0.txt", tmp_path / "stderr-1.txt"]
    processes = [_start_download(url, path) for path in stderr_paths]
    try:
        # Hold the transfer until one process is downloading and the other is blocked on the lock.
        _wait_for(http_files.stalled.is_set, "the first transfer to start")
        _wait_for(
            lambda: any("Waiting for another process" in path.read_text() for path in stderr_paths),
            "the second process to wait on the lock",
        )
        http_files.release.set()
        outputs = [process.communicate(timeout=_SUBPROCESS_TIMEOUT_S)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait(_SUBPROCESS_TIMEOUT_S)

    assert [process.returncode for process in processes] == [0, 0], [p.read_text() for p in stderr_paths]
    local_paths = {pathlib.Path(output.strip()) for output in outputs}
    assert len(local_paths) == 1
    assert local_paths.pop().read_bytes() == payload
    assert http_files.gets["/shared/model.bin"] == 1


def test_gs_file_downloads_anonymously(
    http_files: _FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", http_files.url(""))
    http_files.files["/big_vision/paligemma_tokenizer.model"] = os.urandom(200_000)

    local = download.maybe_download("gs://big_vision/paligemma_tokenizer.model")

    assert local == (tmp_path / "cache" / "big_vision" / "paligemma_tokenizer.model").resolve()
    assert local.read_bytes() == http_files.files["/big_vision/paligemma_tokenizer.model"]


@pytest.mark.slow
def test_killed_directory_download_resumes_without_refetching_finished_files(
    http_files: _FileServer, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", http_files.url(""))
    reference = _tree_bytes(REFERENCE_CKPT / "params")
    for rel, data in reference.items():
        http_files.files[f"/openpi-assets/checkpoints/pi0_tiny/params/{rel}"] = data
    largest = max(reference, key=lambda rel: len(reference[rel]))
    stalled_path = f"/openpi-assets/checkpoints/pi0_tiny/params/{largest}"
    http_files.stall_after_bytes[stalled_path] = len(reference[largest]) // 2
    url = "gs://openpi-assets/checkpoints/pi0_tiny/params"
    local = tmp_path / "cache" / "openpi-assets" / "checkpoints" / "pi0_tiny" / "params"

    with _download_killed_at_exit(url, tmp_path / "stderr.txt", http_files):
        _wait_for(http_files.stalled.is_set, "the largest file to stall half way")
        _wait_for(lambda: len(_staged_files(local)) == len(reference) - 1, "every other file to finish")
    assert not local.exists()

    assert _tree_bytes(download.maybe_download(url)) == reference
    refetched = {path for path, count in http_files.gets.items() if count > 1}
    assert refetched == {stalled_path}
