"""Test-wide settings and fixtures: CPU JAX with one persistent compilation cache shared by tests and their
subprocesses, and a local S3 server (moto) that tests publish files to and reach without credentials."""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import os
import pathlib
from typing import Any

import pytest

_CACHE = pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax_compilation_cache"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

# Variables through which credentials, endpoints or emulators of a cloud store could reach the code under test.
_CLOUD_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
)


@dataclasses.dataclass(frozen=True)
class S3Server:
    """A running local S3 server: its endpoint URL and a credentialed client used only to set up buckets."""

    endpoint: str
    admin: Any  # a boto3 S3 client

    def publish_directory(self, directory: pathlib.Path, bucket: str, prefix: str) -> str:
        """Uploads every file below `directory` to `s3://<bucket>/<prefix>/<relative path>`, readable by anyone
        (the bucket is created if needed); returns that URL."""
        if bucket not in {entry["Name"] for entry in self.admin.list_buckets()["Buckets"]}:
            self.admin.create_bucket(Bucket=bucket)
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(directory).as_posix()}"
                self.admin.upload_file(str(path), bucket, key, ExtraArgs={"ACL": "public-read"})
        return f"s3://{bucket}/{prefix}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port, for the whole session (tests use their own keys or buckets)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        admin = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        yield S3Server(endpoint=endpoint, admin=admin)
    finally:
        server.stop()


@pytest.fixture
def no_cloud_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """No credentials, endpoints, emulators or config files of AWS or Google Cloud reach the code under test."""
    for name in _CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud-config"))


@pytest.fixture
def anonymous_s3(
    s3_server: S3Server, no_cloud_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> S3Server:
    """`s3_server`, which the code under test reaches anonymously through `AWS_ENDPOINT_URL_S3`, downloading
    into an empty cache at `tmp_path / "cache"` (`OPENPI_DATA_HOME`)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    monkeypatch.setenv("OPENPI_DATA_HOME", str(tmp_path / "cache"))
    return s3_server
