import hashlib
import zipfile

import pytest

from spark_jobs.download import Archive, ChecksumError, fetch


def make_archive(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_checks_and_unpacks(tmp_path):
    zip_path = tmp_path / "ml-test.zip"
    md5 = make_archive(zip_path, {"ml-test/u.data": "1\t1\t5\t1\n", "ml-test/README": "x"})
    folder = fetch(Archive(zip_path.as_uri(), md5, "ml-test"), tmp_path / "data")
    assert folder == tmp_path / "data" / "ml-test"
    assert (folder / "u.data").read_text() == "1\t1\t5\t1\n"
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["ml-test"]  # no scratch left behind


def test_wrong_checksum_unpacks_nothing(tmp_path):
    zip_path = tmp_path / "ml-test.zip"
    make_archive(zip_path, {"ml-test/u.data": "1\t1\t5\t1\n"})
    with pytest.raises(ChecksumError, match="does not match the published 0{32}"):
        fetch(Archive(zip_path.as_uri(), "0" * 32, "ml-test"), tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_members_outside_the_folder_are_refused(tmp_path):
    zip_path = tmp_path / "evil.zip"
    md5 = make_archive(zip_path, {"../escape.txt": "x", "ml-test/u.data": ""})
    with pytest.raises(ValueError, match="outside"):
        fetch(Archive(zip_path.as_uri(), md5, "ml-test"), tmp_path / "data")
    assert not (tmp_path / "escape.txt").exists()
