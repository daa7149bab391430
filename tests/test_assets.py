"""The book's files: found beside the chapters, else fetched once from the repository (here a file:// copy)."""

from pathlib import Path

from segformer_edu import assets, data

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_a_file_beside_the_chapters_is_used_as_it_is():
    assert assets.book_file(assets.FRAME, BOOK) == BOOK / assets.FRAME


def test_a_missing_file_is_fetched_once_from_the_repository(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(assets, "REPOSITORY_FILES", BOOK.parent.as_uri() + "/")
    fetched = assets.book_file(assets.FRAME, tmp_path / "a_lone_chapter")
    assert fetched == tmp_path / "cache" / "book" / assets.FRAME
    assert fetched.read_bytes() == (BOOK / assets.FRAME).read_bytes()
    monkeypatch.setattr(data, "urlopen", None)  # a second call must not download again
    assert assets.book_file(assets.FRAME, tmp_path / "a_lone_chapter") == fetched
