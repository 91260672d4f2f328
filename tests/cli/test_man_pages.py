"""The man pages stay true to the code: every key src/config/config.cpp
parses is documented, in its table, in popgate.toml(5) and no other key is;
every command and option the binary's --help tree shows is in popgate(8);
both pages format without a groff warning."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from popgate_test import POPGATE

SOURCE = Path(os.environ.get("POPGATE_SOURCE_DIR", "."))
CONFIG_CPP = SOURCE / "src/config/config.cpp"
MAN5 = SOURCE / "man/popgate.toml.5"
MAN8 = SOURCE / "man/popgate.8"


# ------------------------------------------------------- keys in the source


def parsed_keys(cpp: str):
    """(table, key) for every key config.cpp reads. A key is read by a call
    `sec.<reader>("key", ...)` on the `section sec(..., "table", ...)` in
    scope; helpers taking `section& sec` (read_plaintext, read_http_keys)
    read theirs into the table of the section they are called with."""
    helpers: dict[str, set[str]] = {}
    keys: set[tuple[str, str]] = set()
    helper = table = None
    for line in cpp.splitlines():
        if m := re.match(r"^\S.*\b(\w+)\(section& sec\b", line):
            helper, table = m.group(1), None
            helpers[helper] = set()
            continue
        if line.startswith("}"):  # end of a function at namespace level
            helper = table = None
        if m := re.search(r'\bsection sec\([^,]+, "(\w+)"', line):
            table = m.group(1)
        for key in re.findall(r'\bsec\.\w+\("(\w+)"', line):
            if helper and not table:
                helpers[helper].add(key)
            else:
                assert table, f"a key read outside any section: {line.strip()}"
                keys.add((table, key))
        for call in re.findall(r"\b(\w+)\(sec\b", line):
            if call in helpers and table:
                keys |= {(table, k) for k in helpers[call]}
    return keys


def test_the_source_extraction_finds_what_is_there():
    keys = parsed_keys(CONFIG_CPP.read_text())
    # One key of each kind of call, a helper's key in both tables that use it,
    # and the table-wide count: the extraction cannot silently find nothing.
    for k in [("server", "hostname"), ("listener", "protocol"), ("listener", "plaintext"), ("auth", "plaintext"),
              ("listener", "api_key_file"), ("listener", "trusted_networks"), ("tls", "ticket_key_rotation"),
              ("storage", "busy_timeout_ms"), ("mail", "local_domains"), ("relay", "no_grant_networks"),
              ("relay", "grant_limit_action"), ("auth", "max_users_per_ip"), ("limits", "max_bad_commands"),
              ("log", "target")]:
        assert k in keys, k
    assert {t for t, _ in keys} == {"server", "listener", "tls", "storage", "mail", "relay", "auth", "limits", "log"}
    assert len(keys) >= 80, len(keys)


# ------------------------------------------------------ keys in the man page


def roff_plain(text: str) -> str:
    """Roff source without font changes and with \\- as -."""
    text = re.sub(r"\\f[BIRP]|\\f\(\w\w|\\f\[\w*\]", "", text)
    return text.replace("\\-", "-").replace("\\(dq", '"')


def documented_keys(man: str):
    """(table, key) for every key entry: a .TP whose tag starts with the key
    in bold, under `.SS [table]` or `.SS [[table]]`."""
    keys: set[tuple[str, str]] = set()
    table = None
    lines = man.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(".SH"):
            table = None
        if m := re.match(r"^\.SS \[\[?(\w+)\]\]?\s*$", line):
            table = m.group(1)
        if line.startswith(".TP") and table and i + 1 < len(lines):
            if m := re.match(r"^\\fB(\w+)\\fR", lines[i + 1]):
                keys.add((table, m.group(1)))
    return keys


def missing_and_extra(man: str):
    code = parsed_keys(CONFIG_CPP.read_text())
    page = documented_keys(man)
    return sorted(code - page), sorted(page - code)


def test_every_parsed_key_is_in_popgate_toml_5_under_its_table():
    missing, extra = missing_and_extra(MAN5.read_text())
    assert missing == [], f"keys config.cpp parses that popgate.toml(5) does not document: {missing}"
    assert extra == [], f"keys popgate.toml(5) documents that config.cpp does not parse: {extra}"


def test_the_key_check_fails_on_a_stale_page():
    man = MAN5.read_text()
    # A key dropped from the page, and one moved to the wrong table.
    dropped = re.sub(r"^\.TP\n\\fBmax_users_per_ip\\fR.*\n", "", man, flags=re.M)
    assert dropped != man
    assert missing_and_extra(dropped)[0] == [("auth", "max_users_per_ip")]
    moved = man.replace(".SS [log]\n", ".SS [log]\n.TP\n\\fBgrant\\fR \\fIboolean\\fR\nmisplaced\n")
    assert missing_and_extra(moved)[1] == [("log", "grant")]


def test_every_key_entry_says_its_type_or_values_and_default():
    man = MAN5.read_text().splitlines()
    for i, line in enumerate(man[:-1]):
        if line.startswith(".TP") and man[i + 1].startswith("\\fB"):
            tag = roff_plain(man[i + 1])
            if tag.split()[0] in {k for _, k in parsed_keys(CONFIG_CPP.read_text())}:
                assert "default" in tag or "required" in tag, tag


def test_every_key_of_the_shipped_config_is_documented():
    import tomllib
    shipped = tomllib.loads((SOURCE / "config/popgate.toml").read_text())
    page = documented_keys(MAN5.read_text())
    for table, value in shipped.items():
        rows = value if isinstance(value, list) else [value]
        for row in rows:
            for key in row:
                assert (table, key) in page, (table, key)


def toml_text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_text, v)) + "]"
    return str(v)


def documented_defaults(man: str) -> dict[tuple[str, str], str]:
    """(table, key) -> what follows "default " in the entry's tag."""
    out = {}
    table = None
    lines = man.splitlines()
    for i, line in enumerate(lines[:-1]):
        if m := re.match(r"^\.SS \[\[?(\w+)\]\]?\s*$", line):
            table = m.group(1)
        if line.startswith(".TP") and table and (m := re.match(r"^\\fB(\w+)\\fR.*, default (.*)$", lines[i + 1])):
            out[(table, m.group(1))] = roff_plain(m.group(2)).strip()
    return out


# Where the page's default is not the shipped file's value, and why.
DEFAULT_DIFFERS = {
    ("auth", "loopback_is_secure"): "false without the key; the shipped file sets true (the page says so)",
    ("tls", "ciphers"): "the page describes the long list in words",
    ("log", "target"): "depends on log.file; the page says how",
}


def test_the_defaults_on_the_page_are_the_shipped_values():
    import tomllib
    shipped = tomllib.loads((SOURCE / "config/popgate.toml").read_text())
    page = documented_defaults(MAN5.read_text())
    checked = 0
    for table, value in shipped.items():
        if table == "listener":  # the shipped listeners are examples, not defaults
            continue
        for key, v in value.items():
            if (table, key) in DEFAULT_DIFFERS:
                continue
            assert page.get((table, key)) == toml_text(v), (table, key, page.get((table, key)), toml_text(v))
            checked += 1
    assert checked > 60, checked


# ------------------------------------------------------ commands in popgate(8)


def help_tree(path=()):
    """{command path: set of its long options} from the binary's --help."""
    out = subprocess.run([POPGATE, *path, "--help"], capture_output=True, text=True, timeout=30).stdout
    options = set(re.findall(r"^\s+(?:-\w,)?(--[\w-]+)", out, flags=re.M)) - {"--help"}
    subs = []
    if "Subcommands:" in out:
        subs = re.findall(r"^  ([a-z][\w-]*)\s", out.split("Subcommands:", 1)[1], flags=re.M)
    tree = {path: options}
    for s in subs:
        tree |= help_tree((*path, s))
    return tree


def man8_entries(text: str):
    """The plain text of each .TP entry of COMMANDS, keyed by its tag."""
    section = text.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0]
    entries = {}
    for chunk in section.split("\n.TP\n")[1:]:
        tag, _, body = chunk.partition("\n")
        tag = roff_plain(re.sub(r"^\.\w+ ", "", tag)).strip()
        entries[tag] = roff_plain(tag + "\n" + body)
    return entries


def man8_problems(text: str, tree) -> list[str]:
    """What of the --help tree popgate(8) lacks: a leaf command without an
    entry of its own in COMMANDS, an option missing from its command's
    entry, a global option missing from the page."""
    entries = man8_entries(text)
    whole = roff_plain(text)
    problems = []
    for path, options in tree.items():
        if path and any(len(p) > len(path) and p[:len(path)] == path for p in tree):
            continue  # a group such as `user`: its leaves are checked
        if not path:
            problems += [f"global option {o}" for o in sorted(options) if o not in whole]
            continue
        name = " ".join(path)
        entry = next((e for tag, e in entries.items() if tag.startswith(name + " ") or tag == name), None)
        if entry is None:
            problems.append(f"no entry for `popgate {name}`")
            continue
        problems += [f"`popgate {name}`: {o}" for o in sorted(options) if not re.search(re.escape(o) + r"\b", entry)]
    return problems


@pytest.fixture(scope="module")
def tree():
    t = help_tree()
    assert ("db", "copy") in t and ("user", "import") in t and ("serve",) in t, sorted(t)
    assert "--replace" in t[("db", "copy")] and "--json" in t[("grant", "list")] and "--db" in t[()]
    return t


def test_every_command_and_option_is_in_popgate_8(tree):
    assert man8_problems(MAN8.read_text(), tree) == []


def test_the_command_check_fails_on_a_stale_page(tree):
    text = MAN8.read_text()
    no_copy = re.sub(r"^\.TP\n\.B db copy .*?(?=^\.TP)", "", text, flags=re.M | re.S)
    assert no_copy != text
    assert man8_problems(no_copy, tree) == ["no entry for `popgate db copy`"]
    no_all = text.replace("\\fB\\-\\-all\\fR", "", 1).replace(".B \\-\\-all\n", "", 1)
    assert man8_problems(no_all, tree) == ["`popgate grant list`: --all"]


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize("page", [MAN5, MAN8], ids=lambda p: p.name)
def test_pages_format_without_warnings(page):
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", page], capture_output=True, text=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"}, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
