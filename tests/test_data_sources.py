"""Every source format parsed from tiny files written in the exact upstream layouts, and bad input."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import free_port

from ncfctl.config import load_config
from ncfctl.data import download
from ncfctl.data.sources import read_source
from ncfctl.errors import NcfError

ROWS = [(1, 1193, 5, 978300760), (1, 661, 3, 978302109), (2, 1357, 4, 978298709), (10, 3068, 4, 978299000)]


def data_config(dataset: str, **overrides):
    flat = {"data.dataset": dataset, **{f"data.{k}": v for k, v in overrides.items()}}
    return load_config(overrides=flat, environ={}).data


def ml1m_text(rows=ROWS) -> str:
    return "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows)


def ml100k_text(rows=ROWS) -> str:
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)


def mlcsv_text(rows=ROWS, half_stars=True) -> str:
    body = "".join(f"{u},{i},{r - 0.5 if half_stars else r:.1f},{t}\n" for u, i, r, t in rows)
    return "userId,movieId,rating,timestamp\n" + body


def write_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def assert_rows(frame: pd.DataFrame, ratings=None):
    assert frame["user"].tolist() == [r[0] for r in ROWS]
    assert frame["item"].tolist() == [r[1] for r in ROWS]
    assert frame["timestamp"].tolist() == [r[3] for r in ROWS]
    expected = [r[2] for r in ROWS] if ratings is None else ratings
    np.testing.assert_allclose(frame["rating"].to_numpy(), expected)
    assert frame["rating"].dtype == np.float32 and frame["timestamp"].dtype == np.int64


@pytest.mark.parametrize(
    "dataset, member, text, ratings",
    [
        ("ml-1m", "ml-1m/ratings.dat", ml1m_text(), None),
        ("ml-100k", "ml-100k/u.data", ml100k_text(), None),
        ("ml-20m", "ml-20m/ratings.csv", mlcsv_text(), [4.5, 2.5, 3.5, 3.5]),
        ("ml-25m", "ml-25m/ratings.csv", mlcsv_text(), [4.5, 2.5, 3.5, 3.5]),
        ("ml-latest-small", "ml-latest-small/ratings.csv", mlcsv_text(), [4.5, 2.5, 3.5, 3.5]),
    ],
)
def test_movielens_zip_folder_and_file(tmp_path, dataset, member, text, ratings):
    # The release archive with its sibling files, exactly as GroupLens ships it.
    decoy = {f"{dataset}/README.txt": "readme", f"{dataset}/movies.dat": "1::Toy Story (1995)::Animation\n"}
    archive = write_zip(tmp_path / f"{dataset}.zip", {**decoy, member: text})
    log = read_source(data_config(dataset), archive)
    assert_rows(log.frame, ratings)
    assert log.origin == f"{archive}:{member}"

    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    for source in (unpacked, unpacked / dataset, unpacked / member):  # parent folder, release folder, the file
        assert_rows(read_source(data_config(dataset), source).frame, ratings)


def test_user_csv_string_ids_and_column_mapping(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        'customer,sku,stars,when,title\n007,A-1,4,2001-01-01T00:00:00Z,"Toy Story, the"\n'
        "u2,B 2,2.5,2001-01-02 00:00:00,x\n007,A-1,5,2001-01-03,x\n"
    )
    cfg = data_config("csv", user_col="customer", item_col="sku", rating_col="stars", time_col="when")
    log = read_source(cfg, path)
    assert log.frame["user"].astype(str).tolist() == ["007", "u2", "007"]  # leading zeros kept
    assert log.frame["item"].astype(str).tolist() == ["A-1", "B 2", "A-1"]
    assert log.frame["rating"].tolist() == [4.0, 2.5, 5.0]
    assert log.frame["timestamp"].tolist() == [978307200, 978393600, 978480000]
    assert log.has_ratings and log.has_timestamps


def test_user_csv_without_rating_and_time(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id\na,x\nb,y\n")
    log = read_source(data_config("csv"), path)
    assert log.frame["rating"].tolist() == [1.0, 1.0] and log.frame["timestamp"].tolist() == [0, 0]
    assert not log.has_ratings and not log.has_timestamps


def test_user_parquet_file_and_folder(tmp_path):
    frame = pd.DataFrame(
        {
            "uid": ["a", "b", "a"],
            "iid": [10, 20, 30],
            "r": [1.0, 2.0, 3.0],
            "t": pd.to_datetime(["2001-01-01", "2001-01-02", "2001-01-03"], utc=True),
        }
    )
    (tmp_path / "parts").mkdir()
    frame.to_parquet(tmp_path / "parts" / "part-0.parquet")
    frame.to_parquet(tmp_path / "log.parquet")
    cfg = data_config("parquet", user_col="uid", item_col="iid", rating_col="r", time_col="t")
    for source in (tmp_path / "log.parquet", tmp_path / "parts"):
        log = read_source(cfg, source)
        assert log.frame["user"].astype(str).tolist() == ["a", "b", "a"]
        assert log.frame["item"].tolist() == [10, 20, 30]
        assert log.frame["timestamp"].tolist() == [978307200, 978393600, 978480000]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1::1193::5::978300760\n1::661::3::978302109::7\n", r"ratings\.dat line 2: expected 7 fields, found 9"),
        ("1::1193::5::978300760\n\n1::661::3\n", r"ratings\.dat line 3: expected 7 fields, found 5"),
        ("1::1193::5::978300760\n2::661::five::978302109\n", r"line 2: rating 'five' is not a finite number"),
        ("1::1193::5::978300760\n2::661::nan::978302109\n", r"line 2: rating 'nan' is not a finite number"),
        ("1::1193::5::978300760\n2::6x1::3::978302109\n", r"line 2: item '6x1' is not an integer"),
        ("1::1193::5::978300760\n::661::3::978302109\n", r"line 2: empty user field"),
        ("1::1193::5::978300760\n2:x:661::3::978302109\n", r"line 2: unexpected text 'x'"),
        ("", r"ratings\.dat is empty"),
    ],
)
def test_bad_movielens_lines_name_file_line_and_value(tmp_path, text, message):
    archive = write_zip(tmp_path / "ml-1m.zip", {"ml-1m/ratings.dat": text})
    with pytest.raises(NcfError, match=message) as err:
        read_source(data_config("ml-1m"), archive)
    assert "\n" not in str(err.value) and str(archive) in str(err.value)


@pytest.mark.parametrize(
    "text, cols, message",
    [
        ("user,item_id\na,x\n", {}, r"has no column 'user_id' for the user \(line 1 has: user, item_id\).*user_col"),
        ("user_id,item_id,r\na,x,1\nb,y,bad\n", {"rating_col": "r"}, r"line 3: rating 'bad' is not a finite number"),
        ("user_id,item_id,t\na,x,1\nb,y,soon\n", {"time_col": "t"}, r"line 3: timestamp 'soon' is not Unix seconds"),
        ("user_id,item_id\na,x\n,y\n", {}, r"line 3: empty user field"),
        ("user_id,item_id\n", {}, r"is empty: no interactions"),
        ("", {}, r"is empty"),
    ],
)
def test_bad_user_csv(tmp_path, text, cols, message):
    path = tmp_path / "log.csv"
    path.write_text(text)
    with pytest.raises(NcfError, match=message):
        read_source(data_config("csv", **cols), path)


def test_bad_user_parquet(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "r": ["4", "good"]}).to_parquet(path)
    with pytest.raises(NcfError, match=r"log\.parquet row 2: rating 'good' is not valid"):
        read_source(data_config("parquet", rating_col="r"), path)
    with pytest.raises(NcfError, match=r"has no column 'stars' for the rating .*data.rating_col"):
        read_source(data_config("parquet", rating_col="stars"), path)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(NcfError, match=r"junk\.parquet is not a readable Parquet file"):
        read_source(data_config("parquet"), tmp_path / "junk.parquet")


def test_missing_source_and_wrong_archive(tmp_path):
    with pytest.raises(NcfError, match=r"data.source .*nowhere does not exist"):
        read_source(data_config("ml-1m"), tmp_path / "nowhere")
    archive = write_zip(tmp_path / "ml-100k.zip", {"ml-100k/u.data": ml100k_text()})
    with pytest.raises(NcfError, match=r"has no ratings\.dat \(expected ml-1m/ratings\.dat"):
        read_source(data_config("ml-1m"), archive)


@pytest.fixture
def http_folder(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_size_and_checksum(tmp_path, http_folder, monkeypatch):
    root, url = http_folder
    archive = write_zip(root / "ml-100k.zip", {"ml-100k/u.data": ml100k_text()})
    blob = archive.read_bytes()
    good = download.Release(f"{url}/ml-100k.zip", len(blob), hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(download.RELEASES, "ml-100k", good)
    cache = tmp_path / "cache"
    path = download.fetch_release("ml-100k", cache)
    assert path.read_bytes() == blob
    assert_rows(read_source(data_config("ml-100k"), path).frame)

    path.unlink()
    wrong_md5 = download.Release(good.url, good.size, "0" * 32)
    monkeypatch.setitem(download.RELEASES, "ml-100k", wrong_md5)
    with pytest.raises(NcfError, match=r"corrupt: MD5 [0-9a-f]{32}, expected 0{32}"):
        download.fetch_release("ml-100k", cache)
    wrong_size = download.Release(good.url, good.size + 1, good.md5)
    monkeypatch.setitem(download.RELEASES, "ml-100k", wrong_size)
    with pytest.raises(NcfError, match=r"corrupt: size .* expected"):
        download.fetch_release("ml-100k", cache)
    assert list(cache.iterdir()) == []  # nothing unverified is kept


def test_download_offline_says_how_to_pass_a_local_copy(tmp_path, monkeypatch):
    closed = f"http://127.0.0.1:{free_port()}/ml-1m.zip"
    monkeypatch.setitem(download.RELEASES, "ml-1m", download.Release(closed, 1, "0" * 32))
    with pytest.raises(NcfError, match=r"cannot download .*ml-1m\.zip \(no network\?\)") as err:
        download.fetch_release("ml-1m", tmp_path, timeout=5)
    assert "set data.source to /path/to/ml-1m.zip" in str(err.value)
