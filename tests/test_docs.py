"""The README stays short and its commands keep working; every page's links and repo paths resolve.

- README.md has at most 200 lines (the manual lives in docs/, history in CHANGELOG.md).
- Every relative markdown link in README.md, CHANGELOG.md and docs/*.md points to an existing
  file, and an anchor into a .md file names one of its headings (GitHub's slugs).
- Every `vicl ...` command the README shows (in code blocks and in inline code), and every
  `vicl ...` line of the docs' code blocks, parses with the real CLI parser. Placeholders in
  CAPITALS become dummy values; `[...]` groups are kept without their brackets; `a|b|c` (and
  `--x X | --y Y` inside a group) is tried once per alternative.
- Every `make TARGET` in the README is a Makefile target.
- Every repo path the README or the docs name in inline code or shell code blocks exists (paths
  created at run time, other projects' files and example user files are exempt: see
  RUNTIME_PREFIXES, EXTERNAL and USER_FILES); all missing paths are reported in one message.
Fast: no network, no Ray, nothing run.
"""

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

from pipelines.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCS = sorted((ROOT / "docs").glob("*.md"))

# Paths made at run time or by the user, never in the tree.
RUNTIME_PREFIXES = ("data/", "models/", ".venv", ".hf", ".dvc/tmp", ".dvc/site", "train_out/", "checkpoints/",
                    "preds/", "my_model_outputs/", "my-dataset/", "photos/", "edits/", "subjects200k",
                    "magicbrush_saved/", "graph200k/", "episodes/", "shards_seq/", "preview/", "/", "~")
# Files of other projects that the docs name (VisualCloze's repository), not vicl's.
EXTERNAL = {"processing.py", "train.py", "util/imgproc.py", "exps/train.sh", "visualcloze.yaml",
            "data/dataset.py", "data/data_reader.py", "data/prefix_instruction.py"}
# Files of the user's own data that the docs show as examples (an edit corpus's members).
USER_FILES = {"instruction.txt", "0001.txt"}
# Top-level folders that hold vicl's code and docs: a backticked path under one of them must exist.
REPO_DIRS = {"core", "pipelines", "annotators", "mining", "training", "benchmarks", "tests", "docs", ".ci"}
# Top-level files a bare name may refer to.
REPO_FILE = re.compile(r"^(Makefile|[\w.-]+\.(yaml|yml|toml|txt|lock|cfg|md))$")

FENCE = re.compile(r"^```(.*?)$(.*?)^```", re.S | re.M)
SHELL = {"", "bash", "sh", "shell", "console"}  # blocks whose `vicl ...` lines are commands (not ```text output)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def code_blocks(text: str, shell_only: bool = False) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(text) if not shell_only or m.group(1).strip() in SHELL]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def inline_code(text: str) -> list[str]:
    # double-backtick spans (``a `b` c``) hold quoted messages, not commands or paths
    return INLINE.findall(re.sub(r"``.*?``", "", prose(text)))


# --- README length ------------------------------------------------------------------------------

def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most 200: move detail to docs/)"


# --- links ---------------------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = text.lower()
    out = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for line in prose(page.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_links_resolve():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading with the anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slug_follows_github():
    assert slug("Seed selection (`vicl infer`, `vicl eval`)") == "seed-selection-vicl-infer-vicl-eval"
    assert slug("The Graph200K export (what VisualCloze's own reader trains on)") == \
        "the-graph200k-export-what-visualclozes-own-reader-trains-on"
    assert slug("Parameters (`params.yaml`)") == "parameters-paramsyaml"


# --- vicl commands -------------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")
INT_PLACEHOLDERS = {"N"}


def _slots(text: str) -> list[list[str]]:
    """Each word, or `[...]` group, of `text` as the list of its alternatives."""
    slots = []
    for m in re.finditer(r"\[([^\[\]]*)\]|(\S+)", text):
        if m.group(1) is not None:  # an optional group, kept without brackets; `--a X | --b Y`: a choice
            slots.append([v for option in re.split(r"\s\|\s", m.group(1)) for v in alternatives(option)])
        else:
            word = m.group(2)
            slots.append(word.split("|") if "|" in word.strip("|") else [word])
    return slots


def alternatives(command: str) -> list[str]:
    """The command once with every choice at its first alternative, then once per other alternative
    of each choice (the rest at their first): a removed subcommand or choice anywhere fails."""
    slots = _slots(re.sub(r"\s#.*$", "", command))  # a trailing shell comment
    first = [s[0] for s in slots]
    out = [" ".join(first)]
    for i, slot in enumerate(slots):
        out += [" ".join(first[:i] + [alt] + first[i + 1:]) for alt in slot[1:]]
    return list(dict.fromkeys(out))


def argv(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    out = []
    for w in words[1:]:
        if w == "...":  # "more of the same"
            continue
        if PLACEHOLDER.match(w):
            w = "2" if w in INT_PLACEHOLDERS else f"x-{w.lower()}"
        out.append(w)
    return out


def block_commands(text: str) -> list[str]:
    return [line.strip() for block in code_blocks(text, shell_only=True) for line in block.splitlines()
            if line.strip().startswith("vicl ")]


def readme_commands() -> tuple[list[str], list[str]]:
    """The README's commands in code blocks, and those in inline code."""
    text = README.read_text()
    return block_commands(text), [code.strip() for code in inline_code(text) if re.match(r"^vicl [a-z]", code.strip())]


def docs_commands() -> list[str]:
    return [command for page in DOCS for command in block_commands(page.read_text())]


def subcommands() -> set[str]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return set(action.choices)


def check_parses(commands: list[str], inline: bool = False) -> list[str]:
    parser, known = build_parser(), subcommands()
    bad = []
    for command in commands:
        words = command.split()
        if inline and len(words) == 2 and words[1] in known:  # `vicl infer` named in prose: it exists
            continue
        for variant in alternatives(command):
            try:
                parser.parse_args(argv(variant))
            except SystemExit:
                bad.append(f"{command!r} (as {argv(variant)})")
    return bad


def test_alternatives_expand():
    assert alternatives("vicl models list|check|fetch") == [
        "vicl models list", "vicl models check", "vicl models fetch"]
    got = alternatives("vicl eval [--adapter DIR | --predictions DIR] [--seeds N --select pivot|random|first]")
    assert "vicl eval --adapter DIR --seeds N --select pivot" in got
    assert "vicl eval --predictions DIR --seeds N --select pivot" in got
    assert "vicl eval --adapter DIR --seeds N --select first" in got
    assert argv("vicl infer ADAPTER A A2 B OUT --seeds N") == [
        "infer", "x-adapter", "x-a", "x-a2", "x-b", "x-out", "--seeds", "2"]


def test_readme_commands_parse(capsys):
    blocks, inline = readme_commands()
    assert any(c.startswith("vicl ingest") for c in blocks), "no vicl commands found in README.md"
    bad = check_parses(blocks) + check_parses(inline, inline=True)
    capsys.readouterr()  # argparse's usage lines
    assert not bad, "README commands the CLI rejects:\n" + "\n".join(bad)


def test_docs_commands_parse(capsys):
    bad = check_parses(docs_commands())
    capsys.readouterr()
    assert not bad, "docs/ commands the CLI rejects:\n" + "\n".join(bad)


def test_a_removed_option_fails(capsys):
    assert check_parses(["vicl verify --no-such-option"]) and check_parses(["vicl no-such-command"])
    assert check_parses(["vicl no-such-command"], inline=True)
    assert check_parses(["vicl models list|check|remove"])  # a later alternative is checked too
    capsys.readouterr()


# --- make targets --------------------------------------------------------------------------------

def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))
    text = README.read_text()
    shown = [line.strip() for block in code_blocks(text) for line in block.splitlines()] + inline_code(text)
    used = {m.group(1) for line in shown for m in [re.match(r"^make ([A-Za-z0-9_.-]+)", line.strip())] if m}
    assert {"demo", "test"} <= used, "README must state `make demo` and `make test`"
    assert used <= targets, f"README names make targets the Makefile lacks: {sorted(used - targets)}"


def test_readme_states_the_ci_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", ci, re.M), ".ci/run no longer runs `make test`"
    assert "make test" in "\n".join(code_blocks(README.read_text()))


# --- repo paths ----------------------------------------------------------------------------------

def repo_paths(page: Path) -> set[str]:
    """Every word of the page's inline code and shell code blocks that names a file of the repo."""
    text = page.read_text()
    words = [w for code in inline_code(text) for w in code.split()]
    words += [w for block in code_blocks(text, shell_only=True) for line in block.splitlines()
              for w in re.sub(r"(^|\s)#.*$", "", line).split()]
    found = set()
    for word in words:
        token = word.strip("()'\",;").split(":")[0]  # `core/images.py: decode_for_store`
        if not token or token in EXTERNAL | USER_FILES or token.startswith(RUNTIME_PREFIXES):
            continue
        if any(c in token for c in "<>{}$=|"):
            continue
        first = token.split("/")[0]
        if "/" in token and first in REPO_DIRS:
            found.add(token)
        elif "/" not in token and REPO_FILE.match(token):
            found.add(token)
    return found


def exists(path: str) -> bool:
    if any(c in path for c in "*?["):
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


@pytest.mark.parametrize("pages", [[README], DOCS], ids=["README", "docs"])
def test_named_paths_exist(pages):
    missing = sorted({f"{page.relative_to(ROOT)}: {path}" for page in pages for path in repo_paths(page)
                      if not exists(path)})
    assert not missing, "paths named in the pages that are not in the tree:\n" + "\n".join(missing)


def test_path_check_sees_paths():
    names = repo_paths(README)
    assert "tests/test_readme_own_images.py" in names and "params.yaml" in names
