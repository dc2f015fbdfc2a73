import html

from cineml import hookimpl


@hookimpl
def report_sections(project):
    notes = project.root / "notes.txt"  # the artist's own notes on the project, shown on its gallery page
    if not notes.is_file():
        return None
    return [("Notes", f"<pre>{html.escape(notes.read_text(encoding='utf-8'))}</pre>")]
