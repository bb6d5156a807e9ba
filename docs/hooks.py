"""MkDocs hook: the CLI and settings references, generated from the code at build time.

docs/cli.md and docs/settings.md each hold a marker comment; on_page_markdown replaces it
with markdown made from the click command tree (kv_app.cli.cli) and from
kv_app.config.SETTINGS, so a new command, flag or setting appears in the docs without
anyone editing them. tests/test_docs_site.py runs the two generators.
"""

from __future__ import annotations

import re

import click

from kv_app import config
from kv_app.cli import cli

CLI_MARKER = "<!-- generated: cli-reference -->"
SETTINGS_MARKER = "<!-- generated: settings-reference -->"
PROGRAM = "kv-app"


def _text(raw: str) -> str:
    """Plain help text as markdown: lines joined, code spans kept, the rest escaped."""
    raw = raw.replace("\b", "")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", raw.strip())]
    out = []
    for paragraph in paragraphs:
        parts = paragraph.split("`")
        for i in range(0, len(parts), 2):  # even parts are outside code spans
            part = re.sub(r"([\\*_\[\]])", r"\\\1", parts[i])
            parts[i] = part.replace("<", "&lt;").replace(">", "&gt;")
        out.append("`".join(parts))
    return "\n\n".join(out)


def _commands() -> list[tuple[str, click.Command, click.Context]]:
    """(name, command, its context) for each command of the kv-app group, in name order."""
    root = click.Context(cli, info_name=PROGRAM)
    found = []
    for name in cli.list_commands(root):
        command = cli.get_command(root, name)
        found.append((name, command, click.Context(command, info_name=name, parent=root)))
    return found


def cli_reference() -> str:
    """Markdown for every command: usage, help, arguments, options with their help."""
    lines = [
        f"Generated from the code (`kv_app/cli.py`) when the site is built; "
        f"`{PROGRAM} COMMAND --help` prints the same.",
        "",
    ]
    for name, command, ctx in _commands():
        lines += [f"### `{PROGRAM} {name}`", "", "```text"]
        lines += [f"Usage: {ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}"]
        lines += ["```", "", _text(command.help or ""), ""]
        arguments = [p for p in command.get_params(ctx) if isinstance(p, click.Argument)]
        if arguments:
            lines += ["Arguments:", ""]
            for argument in arguments:
                item = f"- `{argument.human_readable_name}`"
                if argument.nargs == -1:
                    item += " (one or more)" if argument.required else " (any number)"
                if argument.envvar:
                    item += f": or the variable `{argument.envvar}`"
                lines.append(item)
            lines.append("")
        options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
        lines += ["Options:", ""]
        for option in options:
            flags, help_text = option.get_help_record(ctx) or (option.opts[0], "")
            lines.append(f"- `{flags}`: {_text(help_text)}")
        lines.append("")
    return "\n".join(lines)


def _takers(setting: config.Setting) -> list[tuple[str, str]]:
    """(command, how) for each command that reads the setting from a flag or argument."""
    takers = []
    for name, command, ctx in _commands():
        for param in command.get_params(ctx):
            if param.envvar != setting.env:
                continue
            if isinstance(param, click.Argument):
                takers.append((name, f"argument `{param.human_readable_name}`"))
            else:
                takers.append((name, "`" + " / ".join(param.opts + param.secondary_opts) + "`"))
    return takers


def _default(setting: config.Setting) -> str:
    if setting.default is None:
        return "none"
    if setting.kind is bool:
        return "`true`" if setting.default else "`false`"
    return f"`{setting.default}`"


def settings_reference() -> str:
    """Markdown for every setting of kv_app.config.SETTINGS: a table, then one section each."""
    lines = [
        "Generated from the code (`kv_app/config.py`, `SETTINGS`; flags from "
        "`kv_app/cli.py`) when the site is built.",
        "",
        "| variable | flag | default | values |",
        "| --- | --- | --- | --- |",
    ]
    for s in config.SETTINGS:
        flag = f"`{s.flag}`" if _flag_taken(s) else "(variable only)"
        if s.name == "DATA_PATH":
            flag = "argument `DATA_FILE`"
        anchor = s.env.lower()
        lines.append(f"| [`{s.env}`](#{anchor}) | {flag} | {_default(s)} | {_text(s.expected())} |")
    lines.append("")
    for s in config.SETTINGS:
        lines += [f"### `{s.env}`", "", _text(s.help), ""]
        lines += [f"- Variable: `{s.env}`; config key of `create_app()`: `{s.name}`"]
        takers = _takers(s)
        if takers:
            for command, how in takers:
                lines.append(f"- `{PROGRAM} {command}`: {how}")
        else:
            lines.append(f"- Flag: no command takes `{s.flag}` yet: set the variable `{s.env}`")
        lines += [f"- Default: {_default(s)}", f"- Values: {_text(s.expected())}", ""]
    return "\n".join(lines)


def _flag_taken(setting: config.Setting) -> bool:
    return any(how.startswith("`") for _, how in _takers(setting))


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    """MkDocs event: fill the markers of cli.md and settings.md."""
    generators = {
        "cli.md": (CLI_MARKER, cli_reference),
        "settings.md": (SETTINGS_MARKER, settings_reference),
    }
    entry = generators.get(page.file.src_uri)
    if entry is None:
        return markdown
    marker, generate = entry
    if marker not in markdown:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: the marker {marker} is missing")
    return markdown.replace(marker, generate())
