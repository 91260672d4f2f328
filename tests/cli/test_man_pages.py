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


def man8_entries():
    """The plain text of each .TP entry of COMMANDS, keyed by its tag."""
    text = MAN8.read_text()
    section = text.split(".SH COMMANDS", 1)[1].split("\n.SH ", 1)[0]
    entries = {}
    for chunk in section.split("\n.TP\n")[1:]:
        tag, _, body = chunk.partition("\n")
        tag = roff_plain(re.sub(r"^\.\w+ ", "", tag)).strip()
        entries[tag] = roff_plain(tag + "\n" + body)
    return entries


def test_every_command_and_option_is_in_popgate_8():
    tree = help_tree()
    assert ("db", "copy") in tree and ("user", "import") in tree and ("serve",) in tree
    entries = man8_entries()
    whole = roff_plain(MAN8.read_text())
    for path, options in tree.items():
        if path and any(len(p) > len(path) and p[:len(path)] == path for p in tree):
            continue  # a group such as `user`: its leaves are checked
        if not path:
            for opt in options:
                assert opt in whole, opt
            continue
        name = " ".join(path)
        entry = next((e for tag, e in entries.items() if tag.startswith(name + " ") or tag == name), None)
        assert entry is not None, f"popgate(8) has no entry for `popgate {name}`"
        for opt in options:
            assert re.search(re.escape(opt) + r"\b", entry), f"`popgate {name}`: {opt} is not in its entry"


# ---------------------------------------------------------------- formatting


@pytest.mark.parametrize("page", [MAN5, MAN8], ids=lambda p: p.name)
def test_pages_format_without_warnings(page):
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", page], capture_output=True, text=True,
                       env={**os.environ, "LC_ALL": "C.UTF-8"}, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
