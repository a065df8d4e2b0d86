import functools
import gzip
import http.server
import threading

import pytest
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.data.download import DownloadError, download_release, release_files
from lookahead_router.data.release import import_release
from tests.conftest import FAKE_CANDIDATES, build_fake_release, real_release

runner = CliRunner()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(directory):
        handler = functools.partial(_Quiet, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _complete_fake(root):
    """The fake release plus the files import does not read but the download fetches."""
    build_fake_release(root)
    for rel in release_files(FAKE_CANDIDATES):
        path = root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "wt") as fh:
                fh.write("[]")
    return root


@pytest.mark.skipif(real_release() is None, reason="the paper's release is not beside the repository")
def test_download_of_the_real_release_over_loopback(serve, tmp_path):
    src = real_release()
    url = serve(src)
    out = tmp_path / "release"
    written = download_release(out, url, progress=False)
    assert len(written) == len(release_files())
    for rel in release_files():
        assert (out / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert download_release(out, url, progress=False) == []  # complete files are not fetched again


def test_download_then_import(serve, tmp_path):
    url = serve(_complete_fake(tmp_path / "served"))
    result = runner.invoke(app, ["data", "download", "--out", str(tmp_path / "got"), "--url", url,
                                 "--candidates", ",".join(FAKE_CANDIDATES)])
    assert result.exit_code == 0, result.output
    ds = import_release(tmp_path / "got", progress=False)
    assert ds.candidates == FAKE_CANDIDATES and len(ds) == 65


def test_download_errors_leave_no_partial_file(serve, tmp_path):
    served = _complete_fake(tmp_path / "served")
    (served / "test/MATH/model-b.json.gz").unlink()
    truncated = served / "test/GSM8k/model-a.json.gz"
    url = serve(served)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_release(tmp_path / "got", url, FAKE_CANDIDATES, progress=False)
    assert not list((tmp_path / "got").rglob("*.part"))
    truncated.write_bytes(truncated.read_bytes()[:20])
    with pytest.raises(DownloadError, match="truncated"):
        download_release(tmp_path / "got2", url, FAKE_CANDIDATES, progress=False)
    assert not (tmp_path / "got2/test/GSM8k/model-a.json.gz").exists()
    assert not list((tmp_path / "got2").rglob("*.part"))
