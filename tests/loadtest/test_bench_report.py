"""``make bench`` rewrites only its own part of docs/performance.md."""

from __future__ import annotations

from pathlib import Path

from loadtest.bench import END_MARK, START_MARK, write_performance_md


def test_the_generated_part_is_replaced_and_the_prose_around_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "performance.md"
    path.write_text(f"# Performance\n\nbefore\n\n{START_MARK}\nold figures\n{END_MARK}\n\nafter\n")

    write_performance_md(["new figures: 1,234/s"], path)

    text = path.read_text()
    assert text.startswith("# Performance\n\nbefore\n\n")
    assert text.endswith(f"{END_MARK}\n\nafter\n")
    assert "new figures: 1,234/s" in text and "old figures" not in text


def test_a_missing_file_is_created_with_the_marks(tmp_path: Path) -> None:
    path = tmp_path / "performance.md"

    write_performance_md(["figures"], path)

    assert [1, 1] == [path.read_text().count(START_MARK), path.read_text().count(END_MARK)]
