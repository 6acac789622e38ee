"""Tests of the verified download against an HTTP server started on 127.0.0.1 in the test."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunisian_lung.cli import EXIT_OK, EXIT_USAGE, main
from tunisian_lung.errors import ChecksumMismatchError, FetchError, UnsafeArchiveError
from tunisian_lung.packaging.fetch import extract_archive, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB with every byte value


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.behaviour[path]`` lists what each request does."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # silence the test output
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server method name
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        body = server.files.get(self.path)  # type: ignore[attr-defined]
        plan = server.behaviour.get(self.path, [])  # type: ignore[attr-defined]
        step = plan.pop(0) if plan else "ok"
        if body is None:
            self.send_error(404)
            return
        if step == "500":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[len("bytes=") :].split("-", 1)[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if step == "drop":
            # Send a third of the body, then close the connection mid-transfer.
            self.wfile.write(body[start : start + len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body[start:])


class _Server(http.server.ThreadingHTTPServer):
    """A test server that stays quiet when the client closes a connection early."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files = {}  # type: ignore[attr-defined]
    httpd.behaviour = {}  # type: ignore[attr-defined]
    httpd.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(httpd: http.server.ThreadingHTTPServer, path: str) -> str:
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}{path}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_clean_download(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    path = fetch(_url(server, "/data.bin"), tmp_path, sha256=_sha(PAYLOAD), backoff=0)
    assert path == tmp_path / "data.bin"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()


def test_fetch_skips_present_file_with_checksum(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    url = _url(server, "/data.bin")
    fetch(url, tmp_path, sha256=_sha(PAYLOAD), backoff=0)
    fetch(url, tmp_path, sha256=_sha(PAYLOAD), backoff=0)
    assert len(server.requests) == 1


def test_fetch_resumes_dropped_connection(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    server.behaviour["/data.bin"] = ["drop"]
    target = tmp_path / "out.bin"
    fetch(_url(server, "/data.bin"), target, sha256=_sha(PAYLOAD), backoff=0)
    assert target.read_bytes() == PAYLOAD
    ranges = [header for _, header in server.requests]
    assert len(ranges) == 2
    assert ranges[0] is None
    # The second request resumes after the bytes already saved, at most the third that was sent.
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= len(PAYLOAD) // 3


def test_fetch_retries_after_server_error(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    server.behaviour["/data.bin"] = ["500"]
    path = fetch(_url(server, "/data.bin"), tmp_path, sha256=_sha(PAYLOAD), backoff=0)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_fetch_gives_up_after_retries(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    server.behaviour["/data.bin"] = ["500", "500", "500"]
    with pytest.raises(FetchError, match="after 3 attempt"):
        fetch(_url(server, "/data.bin"), tmp_path, retries=2, backoff=0)
    assert not (tmp_path / "data.bin").exists()


def test_fetch_not_found_is_not_retried(server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(_url(server, "/missing.bin"), tmp_path, backoff=0)
    assert len(server.requests) == 1


def test_fetch_wrong_checksum_leaves_nothing(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    with pytest.raises(ChecksumMismatchError, match="expected " + "0" * 64):
        fetch(_url(server, "/data.bin"), tmp_path, sha256="0" * 64, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_fetch_rejects_invalid_checksum_text(server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="invalid sha256"):
        fetch(_url(server, "/data.bin"), tmp_path, sha256="abc")


def test_fetch_reports_short_disk(server, tmp_path: Path, monkeypatch) -> None:
    server.files["/data.bin"] = PAYLOAD

    class _Usage:
        total = used = 0
        free = 10

    monkeypatch.setattr("tunisian_lung.packaging.fetch.shutil.disk_usage", lambda path: _Usage())
    with pytest.raises(FetchError, match="not enough disk space"):
        fetch(_url(server, "/data.bin"), tmp_path, retries=0)


def _zip_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            archive.writestr(info, target)
    return buffer.getvalue()


def _tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def test_fetch_extracts_zip(server, tmp_path: Path) -> None:
    data = _zip_bytes({"release/dataset.json": b"{}", "release/annotations.csv": b"a\n"})
    server.files["/release.zip"] = data
    out = fetch(_url(server, "/release.zip"), tmp_path / "out", sha256=_sha(data), extract=True, backoff=0)
    assert (out / "release" / "dataset.json").read_bytes() == b"{}"
    assert (out / "release" / "annotations.csv").read_bytes() == b"a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_fetch_extracts_tar_with_inner_link(server, tmp_path: Path) -> None:
    data = _tar_bytes({"release/a.txt": b"A"}, links={"release/b.txt": "a.txt"})
    server.files["/release.tar.gz"] = data
    out = fetch(_url(server, "/release.tar.gz"), tmp_path / "out", extract=True, backoff=0)
    assert (out / "release" / "b.txt").read_bytes() == b"A"


@pytest.mark.parametrize(
    ("kind", "members", "links"),
    [
        ("zip", {"../evil.txt": b"x"}, None),
        ("zip", {"/abs/evil.txt": b"x"}, None),
        ("zip", {"ok.txt": b"x"}, {"link": "../../outside"}),
        ("tar", {"a/../../evil.txt": b"x"}, None),
        ("tar", {"/etc/evil.txt": b"x"}, None),
        ("tar", {"ok.txt": b"x"}, {"link": "/etc/passwd"}),
        ("tar", {"ok.txt": b"x"}, {"sub/link": "../../outside"}),
    ],
    ids=["zip-slip", "zip-absolute", "zip-symlink-out", "tar-slip", "tar-absolute", "tar-symlink-absolute", "tar-symlink-out"],
)
def test_fetch_rejects_unsafe_archive(server, tmp_path: Path, kind, members, links) -> None:
    data = _zip_bytes(members, links) if kind == "zip" else _tar_bytes(members, links)
    name = "/bad.zip" if kind == "zip" else "/bad.tar.gz"
    server.files[name] = data
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="refusing to extract"):
        fetch(_url(server, name), out, extract=True, backoff=0)
    assert sorted(p.name for p in out.iterdir()) == [name.lstrip("/")]
    assert not (tmp_path / "evil.txt").exists()


def test_extract_rejects_device_file(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("dev/null-copy")
        info.type = tarfile.CHRTYPE
        archive.addfile(info)
    path = tmp_path / "dev.tar"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(UnsafeArchiveError, match="device"):
        extract_archive(path, tmp_path / "out")


def test_extract_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(_zip_bytes({"x.txt": b"new"}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_bytes(b"old")
    with pytest.raises(FetchError, match="already exists"):
        extract_archive(path, out)
    assert (out / "x.txt").read_bytes() == b"old"


def test_cli_fetch(server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tunisian_lung.cli import main

    server.files["/data.bin"] = PAYLOAD
    url = _url(server, "/data.bin")
    assert main(["fetch", url, str(tmp_path), "--sha256", _sha(PAYLOAD), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "data.bin")
    assert main(["fetch", url, str(tmp_path / "other.bin"), "--sha256", "f" * 64, "--no-progress", "--retries", "0"]) == 1
    assert "ChecksumMismatchError" in capsys.readouterr().err
    assert not (tmp_path / "other.bin").exists()
    assert main(["fetch", "ftp://example.invalid/x", str(tmp_path)]) == 2


def test_fetch_dest_with_trailing_slash_is_folder(server, tmp_path: Path) -> None:
    # "downloads/" once became a file named downloads, because Path() drops the slash.
    server.files["/data.bin"] = PAYLOAD
    path = fetch(_url(server, "/data.bin"), f"{tmp_path}/library/", backoff=0)
    assert path == tmp_path / "library" / "data.bin"
    assert path.read_bytes() == PAYLOAD

    assert main(["fetch", _url(server, "/data.bin"), f"{tmp_path}/cli/", "--no-progress"]) == EXIT_OK
    assert (tmp_path / "cli" / "data.bin").read_bytes() == PAYLOAD


def test_cli_fetch_invalid_sha256_is_usage_error(server, tmp_path: Path) -> None:
    server.files["/data.bin"] = PAYLOAD
    assert main(["fetch", _url(server, "/data.bin"), str(tmp_path), "--sha256", "XYZ"]) == EXIT_USAGE
    assert server.requests == []
