"""Recording benchmark results in BENCHMARKS.md: each run is added at the end of its own `##`
section (created when missing), so every section keeps its dated runs together."""

from pathlib import Path


def add_run(path, heading, text):
    """Add `text` (which may start with `heading`) at the end of the `heading` section of `path`."""
    path = Path(path)
    body = text.split(heading, 1)[1].lstrip("\n") if text.startswith(heading) else text
    existing = path.read_text() if path.exists() else ""
    if heading not in existing:
        updated = existing.rstrip("\n") + ("\n\n" if existing else "") + heading + "\n\n" + body.rstrip("\n") + "\n"
    else:
        start = existing.index(heading) + len(heading)
        following = existing.find("\n## ", start)
        end = len(existing) if following < 0 else following + 1
        section = existing[:end].rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
        updated = section + ("\n" + existing[end:] if end < len(existing) else "")
    path.write_text(updated)
