"""Small helpers for results files (markdown sections rewritten in place)."""

from pathlib import Path


def update_markdown_section(path, name: str, text: str, title: str = "# Benchmarks\n") -> None:
    """Replace (or append) the block between ``<!-- name begin -->`` and ``<!-- name end -->``."""
    path = Path(path)
    begin, end = f"<!-- {name} begin -->", f"<!-- {name} end -->"
    old = path.read_text() if path.exists() else title
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old:
        pre, rest = old.split(begin, 1)
        new = pre + block + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)
