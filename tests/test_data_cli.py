"""`ncfctl data` through the CLI: JSON and table output, MovieLens from a zip, the error contract."""

from __future__ import annotations

import json
import zipfile

TINY_ENV = {
    "NCFCTL_DATA__SYNTHETIC__USERS": "50",
    "NCFCTL_DATA__SYNTHETIC__ITEMS": "60",
    "NCFCTL_DATA__SYNTHETIC__INTERACTIONS": "1500",
    "NCFCTL_DATA__SYNTHETIC__MIN_PER_USER": "10",
    "NCFCTL_DATA__EVAL_NEGATIVES": "10",
}


def test_synthetic_json_then_table(run_cli, workdir):
    proc = run_cli("data", "--seed", "3", "--json", env=TINY_ENV)
    result = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert result["info"]["dataset"] == "synthetic" and result["info"]["seed"] == 3
    assert result["metrics"]["users"] == 50 and result["metrics"]["test"] == 50
    manifest = json.loads((workdir / "data" / result["id"] / "manifest.json").read_text())
    assert manifest["metrics"] == result["metrics"]
    assert {"train.parquet", "test_negatives.npy", "user_ids.parquet"} <= set(manifest["files"])

    proc = run_cli("data", "--split", "ratio", "--ratio-order", "temporal", "--explicit", env=TINY_ENV)
    assert "synthetic, ratio, explicit" in proc.stdout and "density" in proc.stdout
    assert "dataset written to" in proc.stdout


def test_movielens_zip_with_min_rating(run_cli, tmp_path):
    lines = [f"1::{i}::5::97830{i:04d}" for i in range(1, 6)]  # user 1: five positives
    lines += ["2::1::5::978300000", "2::2::2::978300001", "2::3::3::978300002"]  # user 2: one positive
    lines += ["1::3::4::978309999"]  # user 1 re-rates item 3: the latest rating counts
    lines += [f"3::{i}::4::978300000" for i in (6, 7, 8)]
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "\n".join(lines) + "\n")
        zf.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation\n")
    proc = run_cli(
        "data", "--dataset", "ml-1m", "--source", str(archive), "--min-rating", "4", "--eval-negatives", "1", "--json"
    )
    result = json.loads(proc.stdout)
    assert result["metrics"]["users"] == 2 and result["metrics"]["interactions"] == 8
    assert result["metrics"]["duplicates_dropped"] == 1 and result["metrics"]["users_dropped"] == 1
    assert "dropped 1 users with fewer than 3 interactions" in proc.stderr
    assert result["info"]["source"].endswith("ml-1m.zip:ml-1m/ratings.dat")


def test_bad_input_exits_2_with_one_line_and_writes_nothing(run_cli, workdir, tmp_path):
    source = tmp_path / "events.csv"
    source.write_text("customer,product,score\nc1,p1,5\nc2,p2,lots\n")
    proc = run_cli(
        "data", "--dataset", "csv", "--source", str(source), "--user-col", "customer", "--item-col", "product",
        "--rating-col", "score", "--explicit", check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == [f"Error: {source} line 3: rating 'lots' is not a finite number"]
    assert not (workdir / "data").exists() or not any((workdir / "data").iterdir())

    proc = run_cli("data", "--dataset", "ml-2m", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert "'--dataset'" in line and "'ml-2m'" in line and "'ml-1m'" in line  # the flag, the value, the choices
