"""The docs stay true: the README's test command is what CI runs, the settings page documents every setting the code
reads, every command and snippet works as written, and every link between the pages leads somewhere."""

import json
import re
import subprocess
import uuid
from pathlib import Path

from azure.storage.queue import QueueClient

from shared.settings import ALL_SETTINGS, DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SETTINGS_PAGE = (ROOT / "docs" / "settings.md").read_text()
#: The front page, the pages of docs/, the contributor's guide and changelog beside the README, the deployment guide.
PAGES = sorted(
    [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", ROOT / "infra" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
)
ALL_DOCS = "\n".join(page.read_text() for page in PAGES)
README_MAX_LINES = 250


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^scripts/check$", README, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/check$", ci, re.MULTILINE)


def test_every_setting_is_in_the_settings_table_with_its_default():
    rows = [line for line in SETTINGS_PAGE.splitlines() if line.startswith("| `")]
    for name in ALL_SETTINGS:
        [row] = [r for r in rows if f"`{name}`" in r.split("|")[1]]
        if name in DEFAULTS:
            assert f"`{DEFAULTS[name]}`" in row, name


def test_every_platform_variable_the_code_reads_is_on_the_settings_page():
    from shared import settings

    variables = [value for name, value in vars(settings).items() if name.endswith("_VARIABLE")]
    assert len(variables) >= 4
    rows = [line for line in SETTINGS_PAGE.splitlines() if line.startswith("| `")]
    for variable in variables:
        assert [row for row in rows if row.split("|")[1].strip() == f"`{variable}`"], variable


def test_sample_settings_list_every_setting_with_the_defaults():
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for name in ALL_SETTINGS:
        assert name in values, name
        if name in DEFAULTS:
            assert values[name] == DEFAULTS[name], name


def test_the_repository_stands_alone_without_the_leads_documents():
    # The leads' folder beside the repository is not part of it; no file may send a reader
    # there for the contract, the Partner Center facts or the design (CI's tools there are another matter).
    leads_docs = [f"../shared/{name}.md" for name in ("contract", "partner-center", "design", "style")]
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    cited = {
        (path, doc)
        for path in listing.stdout.split("\0")
        if path and (ROOT / path).is_file()
        for doc in leads_docs
        if doc in (ROOT / path).read_text(encoding="utf-8", errors="replace")
    }
    assert cited == set()


def test_docs_start_azurite_as_the_tests_do():
    commands = [line for line in ALL_DOCS.splitlines() if line.startswith("npx azurite ")]
    assert commands
    for command in commands:
        assert "--skipApiVersionCheck" in command and "--disableTelemetry" in command, command


def test_docs_queue_snippet_works_on_a_fresh_azurite(azurite):
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", ALL_DOCS, re.S) if "send_message" in block]
    queue = f"readme-{uuid.uuid4().hex[:12]}"
    code = snippet.replace('"UseDevelopmentStorage=true"', repr(azurite.connection_string))
    code = code.replace('"product-upgrade-requests"', repr(queue))
    assert queue in code and azurite.connection_string in code
    for _ in range(2):  # the queue does not exist yet, then it does
        exec(compile(code, "docs/development.md", "exec"), {})
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    assert len(list(client.receive_messages(max_messages=10))) == 2


# The front page and the links between the pages.

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
#: An inline link or image: [text](target) or [text](target "title").
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def outside_fences(text: str) -> list[str]:
    """The lines outside fenced code blocks: only there are headings and links."""
    lines, fence = [], ""
    for line in text.splitlines():
        marker = FENCE.match(line)
        if fence:
            if marker and marker.group(1)[0] == fence[0] and len(marker.group(1)) >= len(fence):
                fence = ""
        elif marker:
            fence = marker.group(1)
        else:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, each space a `-`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(text):
        if match := HEADING.match(line):
            slug = github_slug(match.group(2))
            found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `page` whose file does not exist, or whose #anchor no heading of its target has."""
    broken = []
    text = page.read_text(encoding="utf-8")
    for line in outside_fences(text):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if root.resolve() not in (resolved, *resolved.parents):
                broken.append(f"{page.relative_to(root)}: {target} (outside the repository)")
                continue
            if not resolved.exists():
                broken.append(f"{page.relative_to(root)}: {target} (no such file)")
                continue
            if anchor and not (resolved.suffix == ".md" and anchor in anchors(resolved.read_text(encoding="utf-8"))):
                broken.append(f"{page.relative_to(root)}: {target} (no such heading)")
    return broken


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= README_MAX_LINES
    # It sends the reader on to every page of docs/.
    for page in (ROOT / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in README, page.name


def test_every_page_starts_by_saying_who_it_is_for():
    for page in (ROOT / "docs").glob("*.md"):
        lines = [line for line in page.read_text().splitlines() if line.strip()]
        assert lines[0].startswith("# ") and lines[1].startswith("For: "), page.name
    assert "\nFor: " in (ROOT / "CONTRIBUTING.md").read_text()


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 3
    assert [broken for page in PAGES for broken in broken_links(page)] == []


def test_the_readme_does_not_claim_one_test_file_per_module():
    assert "test_<module>" not in ALL_DOCS


def test_github_slugs():
    assert github_slug("Following every upgrade to its end: ledger, tracking, outcomes") == (
        "following-every-upgrade-to-its-end-ledger-tracking-outcomes"
    )
    assert github_slug("Draining a campaign at Partner Center's pace") == "draining-a-campaign-at-partner-centers-pace"
    assert github_slug("What `scripts/run` does") == "what-scriptsrun-does"
    assert github_slug("Deferral (queue requests)") == "deferral-queue-requests"
    assert github_slug("A campaign of 1,000, end to end") == "a-campaign-of-1000-end-to-end"
    assert github_slug("snake_case and-dashes") == "snake_case-and-dashes"


def test_the_link_check_fails_on_a_doctored_page(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\n```bash\n# Not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Front page\n\n## Try it\n\n"
        "[fine](docs/other.md) [fine](docs/other.md#same) [fine](docs/other.md#same-1) [fine](#try-it)\n"
        "[fine](https://example.com/nowhere) [fine](docs/) `[not a link](nowhere.md)`\n"
        "```text\n[not a link](nowhere.md)\n```\n"
        "[missing file](docs/gone.md) [missing anchor](docs/other.md#same-2)\n"
        "[code is no heading](docs/other.md#not-a-heading) [missing here](#try-it-1) [out](../elsewhere.md)\n"
    )
    assert broken_links(page, tmp_path) == [
        "README.md: docs/gone.md (no such file)",
        "README.md: docs/other.md#same-2 (no such heading)",
        "README.md: docs/other.md#not-a-heading (no such heading)",
        "README.md: #try-it-1 (no such heading)",
        "README.md: ../elsewhere.md (outside the repository)",
    ]


def test_the_architecture_page_names_every_module_of_the_package() -> None:
    # The page's table is the map of shared/: a module it does not name is a room nobody can find.
    page = (ROOT / "docs" / "architecture.md").read_text()
    modules = [
        path.relative_to(ROOT / "shared")
        for path in (ROOT / "shared").rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and "__pycache__" not in path.parts
    ]
    assert modules
    assert [str(module) for module in modules if f"`{module.name}`" not in page and module.name not in page] == []
