"""The docs site: references generated from the code (docs/hooks.py) match the code.

The site itself is built with `mkdocs build --strict` by scripts/test.sh (broken links,
anchors and snippets fail there); these tests run the hook's generators in-process.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
import yaml

from kv_app import config
from kv_app.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _load_hooks():
    spec = importlib.util.spec_from_file_location("kv_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def _section(page: str, heading: str) -> str:
    """The text of page from heading to the next heading of the same level."""
    start = page.index(heading + "\n")
    end = page.find("\n### ", start + len(heading))
    return page[start : end if end != -1 else len(page)]


def test_every_setting_has_its_variable_flag_and_row():
    page = hooks.settings_reference()
    for s in config.SETTINGS:
        assert f"| [`{s.env}`](#{s.env.lower()}) |" in page, s.name
        section = _section(page, f"### `{s.env}`")
        assert f"config key of `create_app()`: `{s.name}`" in section
        assert s.expected().split()[0] in section


def test_each_setting_names_exactly_the_commands_that_take_it():
    """Read from the click tree here, independently of the hook's own walk."""
    page = hooks.settings_reference()
    root = click.Context(cli, info_name="kv-app")
    for s in config.SETTINGS:
        takers = {
            name
            for name, command in cli.commands.items()
            for p in command.get_params(click.Context(command, parent=root))
            if p.envvar == s.env
        }
        section = _section(page, f"### `{s.env}`")
        named = set(re.findall(r"^- `kv-app ([a-z-]+)`:", section, re.M))
        assert named == takers, s.name
        if takers:
            assert s.flag in section or s.name == "DATA_PATH", s.name
        else:
            assert f"no command takes `{s.flag}` yet" in section, s.name


def test_every_command_and_option_is_in_the_cli_reference():
    page = hooks.cli_reference()
    root = click.Context(cli, info_name="kv-app")
    assert cli.commands
    for name, command in cli.commands.items():
        section = _section(page, f"### `kv-app {name}`")
        ctx = click.Context(command, info_name=name, parent=root)
        usage = " ".join(command.collect_usage_pieces(ctx))
        assert f"Usage: kv-app {name} {usage}" in section
        for param in command.get_params(ctx):
            for opt in param.opts + param.secondary_opts:
                spelled = opt if isinstance(param, click.Option) else opt.upper()
                assert spelled in section, (name, opt)


def test_a_new_setting_and_command_appear_without_editing_docs(monkeypatch):
    extra = config.Setting("FROBNICATE", 3, "How hard to frobnicate.", int, (), 1, 9)
    monkeypatch.setattr(config, "SETTINGS", config.SETTINGS + (extra,))

    @click.command()
    @click.option("--frobnicate", envvar="KV_FROBNICATE", type=int, help="How hard.")
    def frob(frobnicate):
        """Frobnicate the data."""

    monkeypatch.setitem(cli.commands, "frob", frob)
    settings = hooks.settings_reference()
    assert "| [`KV_FROBNICATE`](#kv_frobnicate) | `--frobnicate` | `3` |" in settings
    assert "- `kv-app frob`: `--frobnicate`" in settings
    reference = hooks.cli_reference()
    assert "### `kv-app frob`" in reference
    assert "Frobnicate the data." in reference


def test_help_text_is_escaped_for_markdown():
    assert hooks._text("a <uuid> b_c `<x> y_z`") == "a &lt;uuid&gt; b\\_c `<x> y_z`"


@pytest.mark.parametrize("page", ["cli.md", "settings.md"])
def test_the_hook_fills_its_marker_and_refuses_a_page_without_it(page):
    text = (DOCS / page).read_text()
    done = hooks.on_page_markdown(text, page=SimpleNamespace(file=SimpleNamespace(src_uri=page)))
    assert "<!-- generated:" not in done
    assert "### `kv-app serve`" in done or "### `KV_PORT`" in done
    plugin_error = pytest.importorskip("mkdocs.exceptions").PluginError
    with pytest.raises(plugin_error, match="marker"):
        hooks.on_page_markdown("# empty", page=SimpleNamespace(file=SimpleNamespace(src_uri=page)))


def test_every_page_of_the_nav_exists_and_every_page_is_in_the_nav():
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = {next(iter(entry.values())) for entry in site["nav"]}
    pages = {p.name for p in DOCS.glob("*.md")}
    assert nav == pages


def test_readme_is_short_and_keeps_the_test_command():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert len(readme) <= 150
    assert any(line.startswith("bash scripts/test.sh ") for line in readme)
