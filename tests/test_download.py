"""The download path for published checkpoints, against a local HTTP server that serves files the way the
model hub does (Range requests, Content-Length) and can cut a connection, ignore ranges or disappear."""
import hashlib
import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dd.checkpoint import load_state_dict
from dd.download import ChecksumError, DownloadError, download, partial_path
from dd.models.llamagen import GPT, PRESETS as LLAMAGEN_PRESETS
from dd.models.var import VAR, PRESETS as VAR_PRESETS


class HubHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start, requested = 0, self.headers.get("Range")
        if requested and server.honour_ranges:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if server.cuts_left > 0:          # announce every byte, send half, hang up
            server.cuts_left -= 1
            self.wfile.write(payload[: len(payload) // 2])
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
    server.files, server.ranges, server.honour_ranges, server.cuts_left = {}, [], True, 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def serve(hub, name: str, body: bytes) -> tuple[str, str]:
    hub.files[f"/{name}"] = body
    return f"{hub.url}/{name}", hashlib.sha256(body).hexdigest()


BODY = torch.randint(0, 256, (3_000_000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()


def test_download_verifies_then_renames_into_place(hub, tmp_path):
    url, digest = serve(hub, "c2i_B_256.pt", BODY)
    path = download(url, tmp_path / "teacher" / "c2i_B_256.pt", sha256=digest, progress=False)
    assert path.read_bytes() == BODY
    assert not partial_path(path).exists()
    assert hub.ranges == [None]
    # A verified file already in place is not fetched again.
    download(url, path, sha256=digest, progress=False)
    assert hub.ranges == [None]


def test_interrupted_download_resumes_from_the_bytes_it_has(hub, tmp_path):
    url, digest = serve(hub, "var_d16.pth", BODY)
    hub.cuts_left = 1
    path = download(url, tmp_path / "var_d16.pth", sha256=digest, retries=2, backoff_seconds=0, progress=False)
    assert path.read_bytes() == BODY
    assert hub.ranges == [None, f"bytes={len(BODY) // 2}-"]   # the retry asked for the missing half only


def test_a_killed_process_leaves_a_part_file_that_a_rerun_completes(hub, tmp_path):
    url, digest = serve(hub, "vq_ds16_c2i.pt", BODY)
    destination = tmp_path / "vq_ds16_c2i.pt"
    hub.cuts_left = 1
    with pytest.raises(DownloadError, match="resumes"):
        download(url, destination, sha256=digest, retries=0, progress=False)
    assert not destination.exists() and partial_path(destination).stat().st_size == len(BODY) // 2
    download(url, destination, sha256=digest, progress=False)
    assert destination.read_bytes() == BODY
    assert hub.ranges[-1] == f"bytes={len(BODY) // 2}-"


def test_a_server_that_ignores_ranges_restarts_the_file(hub, tmp_path):
    url, digest = serve(hub, "c2i_L_256.pt", BODY)
    hub.honour_ranges = False
    destination = tmp_path / "c2i_L_256.pt"
    partial_path(destination).write_bytes(b"stale bytes from another file")
    download(url, destination, sha256=digest, progress=False)
    assert destination.read_bytes() == BODY


def test_wrong_checksum_leaves_nothing_behind(hub, tmp_path):
    url, _ = serve(hub, "var_d20.pth", BODY)
    destination = tmp_path / "var_d20.pth"
    with pytest.raises(ChecksumError, match="does not match"):
        download(url, destination, sha256="0" * 64, progress=False)
    assert not destination.exists() and not partial_path(destination).exists()


def test_an_existing_file_with_the_wrong_checksum_is_an_error_and_is_kept(tmp_path):
    destination = tmp_path / "c2i_B_256.pt"
    destination.write_bytes(b"someone else's file")
    with pytest.raises(ChecksumError, match="delete it"):
        download("http://127.0.0.1:9/c2i_B_256.pt", destination, sha256="0" * 64, progress=False)
    assert destination.read_bytes() == b"someone else's file"


def test_wrong_url_fails_at_once_without_retrying(hub, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404.*Check the URL"):
        download(f"{hub.url}/no_such_file.pt", tmp_path / "x.pt", retries=3, backoff_seconds=10, progress=False)
    assert hub.ranges == [None]
    assert list(tmp_path.iterdir()) == []


def test_server_gone_is_a_clear_error(tmp_path):
    with socket.socket() as probe:        # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot reach the server.*offline"):
        download(f"http://127.0.0.1:{port}/var_d16.pth", tmp_path / "var_d16.pth", retries=1, backoff_seconds=0,
                 progress=False)
    assert not (tmp_path / "var_d16.pth").exists()


def test_file_urls_work_for_checkpoints_already_on_disk(tmp_path):
    source = tmp_path / "mirror" / "c2i_B_256.pt"
    source.parent.mkdir()
    source.write_bytes(BODY)
    path = download(source.as_uri(), tmp_path / "out" / "c2i_B_256.pt", sha256=hashlib.sha256(BODY).hexdigest(),
                    progress=False)
    assert path.read_bytes() == BODY


def checkpoint_bytes(payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("wrapper", ["model", "module", "state_dict", None])
def test_llamagen_checkpoint_in_published_wrappers_downloads_and_loads_strictly(hub, tmp_path, wrapper):
    torch.manual_seed(0)
    weights = GPT(LLAMAGEN_PRESETS["llamagen-tiny"]).state_dict()
    url, digest = serve(hub, "c2i_tiny.pt", checkpoint_bytes(weights if wrapper is None else {wrapper: weights}))
    path = download(url, tmp_path / "c2i_tiny.pt", sha256=digest, progress=False)
    model = GPT(LLAMAGEN_PRESETS["llamagen-tiny"])
    model.load_state_dict(load_state_dict(path), strict=True)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in weights.items())


def test_var_checkpoint_as_a_raw_state_dict_downloads_and_loads_strictly(hub, tmp_path):
    torch.manual_seed(0)
    weights = VAR(VAR_PRESETS["var-tiny"]).state_dict()
    url, digest = serve(hub, "var_tiny.pth", checkpoint_bytes(weights))
    path = download(url, tmp_path / "var_tiny.pth", sha256=digest, progress=False)
    model = VAR(VAR_PRESETS["var-tiny"])
    model.load_state_dict(load_state_dict(path), strict=True)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in weights.items())


class NotWeights:
    """Any object other than tensors and containers: weights_only loading must refuse to build it."""


def test_a_pickle_that_is_not_plain_weights_is_refused(hub, tmp_path):
    url, _ = serve(hub, "evil.pt", checkpoint_bytes({"model": NotWeights()}))
    path = download(url, tmp_path / "evil.pt", progress=False)
    with pytest.raises(ValueError, match="not a readable weights file"):
        load_state_dict(path)


@pytest.mark.slow
@pytest.mark.parametrize("family, preset, millions", [("llamagen", "llamagen-b", 110.89), ("var", "var-d16", 310.28)])
def test_full_size_published_checkpoints_download_and_load_strictly(hub, tmp_path, family, preset, millions):
    """Random weights with every key and shape of c2i_B_256.pt ({"model": ...}) and var_d16.pth (raw)."""
    build = {"llamagen": lambda: GPT(LLAMAGEN_PRESETS[preset]), "var": lambda: VAR(VAR_PRESETS[preset])}[family]
    weights = build().state_dict()
    url, digest = serve(hub, f"{preset}.pt", checkpoint_bytes({"model": weights} if family == "llamagen" else weights))
    path = download(url, tmp_path / f"{preset}.pt", sha256=digest, progress=False)
    model = build()
    model.load_state_dict(load_state_dict(path), strict=True)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


def test_cli_download_reports_errors_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from dd.cli import app
    source = tmp_path / "c2i_B_256.pt"
    source.write_bytes(BODY)
    runner = CliRunner()
    ok = runner.invoke(app, ["download", source.as_uri(), str(tmp_path / "out.pt"), "--sha256",
                             hashlib.sha256(BODY).hexdigest(), "--no-progress"])
    assert ok.exit_code == 0 and (tmp_path / "out.pt").read_bytes() == BODY
    bad = runner.invoke(app, ["download", source.as_uri(), str(tmp_path / "bad.pt"), "--sha256", "0" * 64,
                              "--no-progress"])
    assert bad.exit_code == 1 and "does not match" in bad.output and not (tmp_path / "bad.pt").exists()
