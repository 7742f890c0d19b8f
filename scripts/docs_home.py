"""mkdocs hook: the site's home page is README.md, so the landing page on GitHub and on the
site are one file. Links are written to work on GitHub (README -> docs/x.md, a page ->
../README.md); the hook turns them into the site's (x.md, index.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

README = Path(__file__).resolve().parent.parent / "README.md"


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add README.md to the site as index.md."""
    files.append(File.generated(config, "index.md", abs_src_path=str(README)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Point GitHub-style links at the site's pages."""
    if page.file.src_uri == "index.md":
        return markdown.replace("](docs/", "](")
    return markdown.replace("](../README.md", "](index.md")
