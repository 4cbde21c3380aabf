"""The man pages: they name every option and config key the code has, and render without warnings.

The lists come from the code (cli.parser(), the tools' subparsers, config's sections),
so an option or key added later without documentation fails here.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from prngd import __version__, cli, config, tools

MAN = ROOT / "docs" / "man"
PRNGD_8 = MAN / "man8" / "prngd.8"
PRNGD_CONF_5 = MAN / "man5" / "prngd.conf.5"
PAGES = [PRNGD_8, PRNGD_CONF_5]


def roff_text(path) -> str:
    """The page's source as a reader sees the words: comments dropped, escapes resolved."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith('.\\"')]
    text = "\n".join(lines)
    for escape, plain in (("\\-", "-"), ("\\(dq", '"'), ("\\~", " "), ("\\&", ""), ("\\ ", " ")):
        text = text.replace(escape, plain)
    return re.sub(r"\\f[BIRP]", "", text)


def names(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def documented_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string a user may type; hidden test hooks (help=SUPPRESS) excluded."""
    return [opt for action in parser._actions if action.option_strings and action.help != argparse.SUPPRESS
            for opt in action.option_strings]


def tool_parsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in tools.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def sections(text: str) -> dict[str, str]:
    """`.SS [name]` subsections of prngd.conf(5), each up to the next heading."""
    parts = re.split(r"^\.S[SH] +\"?(.*?)\"?$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


# ---------------------------------------------------------------- prngd(8)

def test_every_daemon_option_is_in_prngd_8():
    text = roff_text(PRNGD_8)
    options = documented_options(cli.parser())
    assert "--example-config" in options and "-k" in options  # the lists really come from the parser
    missing = [opt for opt in options if not names(text, opt)]
    assert missing == [], f"prngd(8) does not name these options of cli.parser(): {missing}"


def test_every_tool_and_its_options_are_in_prngd_8():
    text = roff_text(PRNGD_8)
    parsers = tool_parsers()
    assert set(parsers) == set(cli.CLIENT_COMMANDS)
    missing = []
    for name, parser in parsers.items():
        if not re.search(rf"^\.BR? +\"?prngd {re.escape(name)}\b", text, flags=re.M):
            missing.append(f"prngd {name}")
        missing += [f"prngd {name} {opt}" for opt in documented_options(parser) if not names(text, opt)]
    assert missing == [], f"prngd(8) does not name these tools or options: {missing}"


def test_prngd_8_has_the_sections_an_administrator_looks_for():
    text = roff_text(PRNGD_8)
    headings = set(re.findall(r"^\.SH +\"?(.*?)\"?$", text, flags=re.M))
    assert {"NAME", "SYNOPSIS", "OPTIONS", "CLIENT COMMANDS", "SIGNALS", "EXIT STATUS", "ENVIRONMENT",
            "FILES"} <= headings
    for signame in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"):
        assert names(text, signame), signame


# ---------------------------------------------------------------- prngd.conf(5)

def test_every_config_key_is_in_its_section_of_prngd_conf_5():
    by_section = sections(roff_text(PRNGD_CONF_5))
    missing = []
    for section, keys in config._SECTIONS.items():
        body = by_section.get(f"[{section}]")
        if body is None:
            missing.append(f"[{section}]")
            continue
        # A key is documented when it is the term of an entry (.TP then .B key) in its own section.
        missing += [f"[{section}] {key}" for key in keys
                    if not re.search(rf"^\.TP\n\.BR? +{re.escape(key)}\s*$", body, flags=re.M)]
    for free_form in ("[commands]", "[files]"):
        if free_form not in by_section:
            missing.append(free_form)
    assert missing == [], f"prngd.conf(5) does not document: {missing}"


def test_the_key_lists_come_from_what_the_ini_parser_accepts():
    # Each listed key is one that config.parse_ini() takes in that section, and no other section's.
    for section, keys in config._SECTIONS.items():
        for key in keys:
            with pytest.raises(config.ConfigError, match="unknown key"):
                config.parse_ini(f"[{'pool' if section != 'pool' else 'seed'}]\n{key} = 1\n")
            try:
                config.parse_ini(f"[{section}]\n{key} = 1\n")
            except config.ConfigError as e:
                assert "unknown key" not in str(e), e


# ---------------------------------------------------------------- both pages

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_carries_the_package_version(page):
    title = next(line for line in page.read_text().splitlines() if line.startswith(".TH "))
    assert f'"prngd {__version__}"' in title


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (Debian: groff-base)")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_renders_without_warnings(page):
    out = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (Debian: man-db)")
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_renders_without_warnings(page):
    out = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "SYNOPSIS" in out.stdout and "SEE ALSO" in out.stdout


# ---------------------------------------------------------------- the example configuration

def test_example_config_flag_prints_the_repository_copy():
    out = subprocess.run([sys.executable, "-m", "prngd", "--example-config"], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "prngd.conf.example").read_text()


def test_example_config_documents_every_key():
    text = (ROOT / "prngd.conf.example").read_text()
    for section, keys in config._SECTIONS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert re.search(rf"^{re.escape(key)} =", text, flags=re.M), f"prngd.conf.example lacks {key}"


def test_package_installs_the_pages_and_the_example():
    # pip puts data_files under the environment's prefix: PREFIX/share/man/man8/prngd.8 is where man looks
    # for a prefix on its path (a venv's, /usr/local), and where --example-config finds the example.
    cp = configparser.ConfigParser()
    cp.read(ROOT / "setup.cfg")
    data = {target: value.split() for target, value in cp["options.data_files"].items()}
    assert data["share/man/man8"] == ["docs/man/man8/prngd.8"]
    assert data["share/man/man5"] == ["docs/man/man5/prngd.conf.5"]
    assert "prngd.conf.example" in data["share/doc/prngd"]
    for files in data.values():
        for f in files:
            assert (ROOT / f).is_file(), f


def test_example_config_is_found_under_an_installed_prefix(tmp_path, monkeypatch):
    # As after `pip install` into a venv: no source tree beside the package, the copy in PREFIX/share/doc.
    doc = tmp_path / "venv" / "share" / "doc" / "prngd"
    doc.mkdir(parents=True)
    (doc / "prngd.conf.example").write_text("# the installed copy\n")
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "venv" / "lib" / "site-packages" / "prngd" / "cli.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert cli.example_config_path() == str(doc / "prngd.conf.example")
