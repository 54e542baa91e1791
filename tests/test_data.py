"""Tests for transformer_lib/data.py (written by notebooks/11_data.ipynb).

The download path runs for real against a small HTTP server on 127.0.0.1 that serves fixture bytes; nothing
here touches the internet. The real-data checks read the course's data folder ($TRANSFORMER_COURSE_DATA) with
downloads turned off.
"""

import hashlib
import io
import json
import os
import random
import signal
import socket
import threading
import time
import zipfile
from collections import Counter
from contextlib import redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from transformer_lib.data import (
    DATA_ENV,
    DATASETS,
    MULTI30K_SPLITS,
    DatasetInfo,
    RemoteFile,
    data_dir,
    download,
    fetch,
    load_multi30k,
    load_sms_spam,
    load_tiny_shakespeare,
    sha256_of,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "11_data.ipynb"

GOOD = random.Random(0).randbytes(300_000)  # several chunks of 64 KiB
MEMBER = b"ham\tSee you at eight\nspam\tYou have WON a prize\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """Serves server.routes: path -> (body, how). Every route announces the body's full length; how is None
    (send it all), "cut" (send half, then close the connection) or "interrupt" (send half, then send SIGUSR1
    to this process, as a user pressing Ctrl-C in the middle of a download)."""

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.server.requests.append(self.path)
        if self.path not in self.server.routes:
            self.send_error(404)
            return
        body, how = self.server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if how == "interrupt":
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.5)  # the client gives up meanwhile
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.handle_error = lambda request, address: None  # a client that hung up is part of the tests
    httpd.routes = {
        "/good.bin": (GOOD, None),
        "/corrupt.bin": (GOOD[:-1] + b"\x00", None),
        "/cut.bin": (GOOD, "cut"),
        "/interrupt.bin": (GOOD, "interrupt"),
        "/archive.zip": (zip_bytes({"readme": b"About the data.\n", "DATA": MEMBER}), None),
        "/not-a-zip.zip": (b"<html>Service unavailable</html>", None),
    }
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def requests(server):
    """The paths requested from the server during one test."""
    server.requests.clear()
    return server.requests


def every_file(folder: Path) -> list[str]:
    """All files and folders under folder, hidden ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def register(monkeypatch, *files: RemoteFile, name: str = "fixture") -> str:
    """Add a data set made of `files` to the registry for one test."""
    monkeypatch.setitem(DATASETS, name, DatasetInfo(name, "a test fixture", files, "CC0", "none"))
    return name


# ------------------------------------------------------------------------------------------------ download
def test_good_file_is_downloaded_and_verified(server, requests, tmp_path):
    remote = RemoteFile("sub/good.bin", f"{server.url}/good.bin", sha256(GOOD))
    path = download(remote, tmp_path / "data")
    assert path == tmp_path / "data" / "sub" / "good.bin"
    assert path.read_bytes() == GOOD
    assert every_file(tmp_path / "data") == ["sub", "sub/good.bin"]  # no temporary file left
    assert requests == ["/good.bin"]
    assert path.stat().st_mode & 0o777 == 0o644  # readable by everyone who shares the folder


def test_fetch_downloads_once_then_only_verifies(server, requests, tmp_path, monkeypatch):
    name = register(monkeypatch, RemoteFile("good.bin", f"{server.url}/good.bin", sha256(GOOD)))
    assert fetch(name, root=tmp_path) == tmp_path
    assert fetch(name, root=tmp_path) == tmp_path
    assert requests == ["/good.bin"]
    assert every_file(tmp_path) == ["good.bin"]


def test_corrupted_download_names_both_digests_and_is_not_kept(server, tmp_path):
    remote = RemoteFile("sub/good.bin", f"{server.url}/corrupt.bin", sha256(GOOD))
    with pytest.raises(ValueError, match="checksum mismatch") as error:
        download(remote, tmp_path / "data")
    message = str(error.value)
    assert sha256(GOOD) in message and sha256(GOOD[:-1] + b"\x00") in message
    assert remote.url in message and "not kept" in message
    assert every_file(tmp_path) == []  # neither the file, nor a temporary file, nor the folders it made


def test_connection_cut_halfway_keeps_nothing(server, tmp_path):
    remote = RemoteFile("sub/good.bin", f"{server.url}/cut.bin", sha256(GOOD))
    with pytest.raises(ConnectionError) as error:
        download(remote, tmp_path / "data")
    message = str(error.value)
    assert f"closed after {len(GOOD) // 2:,} of {len(GOOD):,} bytes" in message
    assert remote.url in message and "nothing was kept" in message
    assert every_file(tmp_path) == []


def test_interrupted_download_keeps_nothing(server, tmp_path):
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        pytest.skip("needs POSIX signals, delivered to the main thread")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            download(RemoteFile("sub/good.bin", f"{server.url}/interrupt.bin", sha256(GOOD)), tmp_path)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert every_file(tmp_path) == []


def test_existing_folder_is_kept_after_a_failure(server, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.txt").write_text("mine")
    with pytest.raises(ConnectionError):
        download(RemoteFile("sub/good.bin", f"{server.url}/cut.bin", sha256(GOOD)), tmp_path)
    assert every_file(tmp_path) == ["sub", "sub/other.txt"]


def test_zip_member_is_extracted_and_verified(server, tmp_path):
    remote = RemoteFile("sms/DATA", f"{server.url}/archive.zip", sha256(MEMBER), member="DATA")
    assert download(remote, tmp_path).read_bytes() == MEMBER
    assert every_file(tmp_path) == ["sms", "sms/DATA"]


@pytest.mark.parametrize(
    "path, member, expected",
    [
        ("/archive.zip", "MISSING", r"has no file 'MISSING'; it holds \['readme', 'DATA'\]"),
        ("/not-a-zip.zip", "DATA", "did not send a valid zip archive"),
    ],
)
def test_bad_archive_gives_a_clear_error_and_keeps_nothing(server, tmp_path, path, member, expected):
    remote = RemoteFile("DATA", f"{server.url}{path}", sha256(MEMBER), member=member)
    with pytest.raises(ValueError, match=expected):
        download(remote, tmp_path)
    assert every_file(tmp_path) == []


def test_checksum_of_a_zip_member_is_the_extracted_file(server, tmp_path):
    archive = zip_bytes({"readme": b"About the data.\n", "DATA": MEMBER})
    remote = RemoteFile("DATA", f"{server.url}/archive.zip", sha256(archive), member="DATA")
    with pytest.raises(ValueError, match=sha256(MEMBER)):
        download(remote, tmp_path)
    assert every_file(tmp_path) == []


def test_http_error_names_the_url_and_keeps_nothing(server, tmp_path):
    remote = RemoteFile("x.bin", f"{server.url}/missing.bin", sha256(GOOD))
    with pytest.raises(ConnectionError, match="404") as error:
        download(remote, tmp_path)
    assert remote.url in str(error.value)
    assert every_file(tmp_path) == []


def test_offline_names_url_variable_and_where_to_put_the_file(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/good.bin"
    name = register(monkeypatch, RemoteFile("sub/good.bin", url, sha256(GOOD)))
    with pytest.raises(ConnectionError) as error:
        fetch(name, root=tmp_path / "data")
    message = str(error.value)
    assert url in message and DATA_ENV in message
    assert str(tmp_path / "data" / "sub" / "good.bin") in message
    assert every_file(tmp_path) == []


def test_offline_lists_every_missing_file_of_the_data_set(tmp_path, monkeypatch):
    files = [
        RemoteFile(f"{n}.bin", f"http://127.0.0.1:{closed_port()}/{n}.bin", sha256(GOOD))
        for n in ("one", "two", "three")
    ]
    name = register(monkeypatch, *files)
    with pytest.raises(ConnectionError) as error:
        fetch(name, root=tmp_path)
    for remote in files:
        assert remote.url in str(error.value) and str(tmp_path / remote.path) in str(error.value)
    assert isinstance(error.value.__cause__, OSError)  # the network error itself, for the traceback


# --------------------------------------------------------------------------------------------- fetch errors
def test_read_only_folder_is_never_written(server, requests, tmp_path, monkeypatch):
    name = register(monkeypatch, RemoteFile("sub/good.bin", f"{server.url}/good.bin", sha256(GOOD)))
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "note.txt").write_text("shared copy")
    locked.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="read-only") as error:
            fetch(name, root=locked)
        with pytest.raises(PermissionError, match="read-only"):
            download(DATASETS[name].files[0], locked)
        assert every_file(locked) == ["note.txt"]
    finally:
        locked.chmod(0o755)
    message = str(error.value)
    assert str(locked) in message and DATA_ENV in message and f"{server.url}/good.bin" in message
    assert requests == []


def test_damaged_file_in_place_is_reported_and_left_alone(server, requests, tmp_path, monkeypatch):
    name = register(monkeypatch, RemoteFile("good.bin", f"{server.url}/good.bin", sha256(GOOD)))
    (tmp_path / "good.bin").write_bytes(b"something else")
    with pytest.raises(ValueError) as error:
        fetch(name, root=tmp_path)
    assert sha256(GOOD) in str(error.value) and sha256(b"something else") in str(error.value)
    assert (tmp_path / "good.bin").read_bytes() == b"something else"
    assert requests == []


@pytest.mark.parametrize("name", ["multi30", "MNIST", "", None, 3])
def test_unknown_name_lists_the_known_ones(name, tmp_path):
    with pytest.raises(ValueError, match="unknown data set") as error:
        fetch(name, root=tmp_path)
    assert all(known in str(error.value) for known in DATASETS)
    assert every_file(tmp_path) == []


def test_unknown_name_suggests_the_closest(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'multi30k'"):
        fetch("multi30", root=tmp_path)


def test_allow_download_false_lists_the_missing_files(server, requests, tmp_path, monkeypatch):
    files = [RemoteFile(f"d/{n}.bin", f"{server.url}/good.bin", sha256(GOOD)) for n in ("a", "b")]
    name = register(monkeypatch, *files)
    with pytest.raises(FileNotFoundError) as error:
        fetch(name, root=tmp_path / "data", allow_download=False)
    for remote in files:
        assert remote.url in str(error.value) and str(tmp_path / "data" / remote.path) in str(error.value)
    assert DATA_ENV in str(error.value) and "allow_download=False" in str(error.value)
    assert requests == [] and every_file(tmp_path) == []


def test_data_folder_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"):
        fetch("tinyshakespeare", root=tmp_path / "data")


# ------------------------------------------------------------------------------------------ where data lives
def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_dir() == tmp_path / "home" / ".cache" / "transformer-course"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG specification says
    assert data_dir() == tmp_path / "home" / ".cache" / "transformer-course"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "transformer-course"
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_fetch_follows_the_environment_variable(server, tmp_path, monkeypatch):
    name = register(monkeypatch, RemoteFile("good.bin", f"{server.url}/good.bin", sha256(GOOD)))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert fetch(name) == tmp_path / "env"
    assert every_file(tmp_path) == ["env", "env/good.bin"]
    monkeypatch.delenv(DATA_ENV)
    assert fetch(name) == tmp_path / "xdg" / "transformer-course"
    assert (tmp_path / "xdg" / "transformer-course" / "good.bin").read_bytes() == GOOD


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 7, 3_000_000])
def test_sha256_of_matches_hashlib(size, tmp_path):
    data = random.Random(size).randbytes(size)
    (tmp_path / "f").write_bytes(data)
    assert sha256_of(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("split", ["test", "valid", "TRAIN", ""])
def test_unknown_multi30k_split(split, tmp_path):
    with pytest.raises(ValueError, match="train"):
        load_multi30k(split, root=tmp_path)
    assert every_file(tmp_path) == []


# ---------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_data():
    """The course's data folder, verified, with downloads off; skipped where no folder is configured."""
    if not os.environ.get(DATA_ENV):
        pytest.skip(f"{DATA_ENV} is not set: no local copy of the data sets to check")
    for name in DATASETS:
        fetch(name, allow_download=False)
    return data_dir()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_registered_checksum_matches(real_data, name):
    for remote in DATASETS[name].files:
        assert sha256_of(real_data / remote.path) == remote.sha256, remote.path


def test_multi30k_sizes(real_data):
    sizes = {split: len(load_multi30k(split, root=real_data)) for split in MULTI30K_SPLITS}
    assert sizes == {"train": 29_000, "val": 1_014, "test_2016_flickr": 1_000}
    german, english = load_multi30k("val", root=real_data)[0]
    assert german.startswith("Eine Gruppe von Männern") and english.startswith("A group of men")


def test_tiny_shakespeare_size(real_data):
    text = load_tiny_shakespeare(root=real_data)
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert text.startswith("First Citizen:\n")


def test_sms_spam_counts(real_data):
    messages = load_sms_spam(root=real_data)
    assert len(messages) == 5_574
    assert Counter(label for label, _ in messages) == {"ham": 4_827, "spam": 747}
    assert all(message and "\t" not in message for _, message in messages)


def test_loaders_find_the_folder_through_the_variable(real_data, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(real_data))
    assert len(load_multi30k("test_2016_flickr")) == 1_000
    assert len(load_tiny_shakespeare()) == 1_115_394
    assert len(load_sms_spam()) == 5_574


# ------------------------------------------------------------------------------ the chapter's exercise check
@pytest.fixture(scope="module")
def check_spam_scores():
    """The checker of the chapter's first exercise, taken from the notebook's cell that defines it."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    (source,) = [s for s in sources if "def check_spam_scores(" in s]
    namespace = {"my_spam_scores": _template}
    with redirect_stdout(io.StringIO()):  # the cell ends by checking the exercise's empty template
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace["check_spam_scores"]


def _template(labels, predictions):
    raise NotImplementedError


def _counts(labels, predictions, positive="spam"):
    tp = sum(y == p == positive for y, p in zip(labels, predictions, strict=True))
    called = sum(p == positive for p in predictions)
    actual = sum(y == positive for y in labels)
    return tp, called, actual


def _ratio(a, b):
    return a / b if b else 0.0


def swapped(labels, predictions):
    tp, called, actual = _counts(labels, predictions)
    precision, recall = _ratio(tp, actual), _ratio(tp, called)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def ham_positive(labels, predictions):
    tp, called, actual = _counts(labels, predictions, positive="ham")
    precision, recall = _ratio(tp, called), _ratio(tp, actual)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def arithmetic_mean(labels, predictions):
    tp, called, actual = _counts(labels, predictions)
    precision, recall = _ratio(tp, called), _ratio(tp, actual)
    return precision, recall, (precision + recall) / 2


def divides_by_zero(labels, predictions):
    tp, called, actual = _counts(labels, predictions)
    precision, recall = tp / called, tp / actual
    return precision, recall, 2 * precision * recall / (precision + recall)


def percentages(labels, predictions):
    tp, called, actual = _counts(labels, predictions)
    precision, recall = _ratio(tp, called), _ratio(tp, actual)
    return 100 * precision, 100 * recall, 100 * _ratio(2 * precision * recall, precision + recall)


def accuracy_only(labels, predictions):
    accuracy = sum(y == p for y, p in zip(labels, predictions, strict=True)) / len(labels)
    return accuracy, accuracy, accuracy


def returns_a_dict(labels, predictions):
    return {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def correct_with_sklearn(labels, predictions):
    """Right, and written differently from the chapter's solution."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=["spam"], average="micro", zero_division=0
    )
    return float(precision), float(recall), float(f1)


@pytest.mark.parametrize(
    "answer, diagnosis",
    [
        (_template, "Not attempted yet"),
        (swapped, "precision and recall are swapped"),
        (ham_positive, "scores of the class 'ham'"),
        (arithmetic_mean, "harmonic mean"),
        (divides_by_zero, "ZeroDivisionError"),
        (percentages, "percentages"),
        (accuracy_only, "all three numbers are the accuracy"),
        (returns_a_dict, "expected a tuple"),
        (correct_with_sklearn, "Correct"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_checker_diagnoses_typical_answers(check_spam_scores, answer, diagnosis, capsys):
    check_spam_scores(answer)
    printed = capsys.readouterr().out
    assert diagnosis in printed, printed
    assert ("Correct" in printed) == (answer is correct_with_sklearn), printed
