"""The `kv-app` command: serve, check, get. Thin: parse flags, call the library."""

from __future__ import annotations

import os
import sys

import click

from kv_app import __version__, config
from kv_app.client import KVClient, KVError
from kv_app.loader import LoadError
from kv_app.loader import check as check_file

# The packaged gunicorn settings: found wherever kv_app is installed.
GUNICORN_CONFIG = "python:kv_app.gunicorn_conf"


def _option(name: str, **kwargs):
    """A flag for a setting of kv_app.config, with its KV_* variable and help line."""
    setting = config.BY_NAME[name]
    if setting.choices:
        kwargs.setdefault("type", click.Choice(setting.choices))
    elif setting.kind is bool:
        kwargs.setdefault("is_flag", True)
        kwargs.setdefault("default", None)
    elif setting.kind is int:
        kwargs.setdefault("type", click.IntRange(setting.low, setting.high))
    return click.option(
        setting.flag,
        name.lower(),
        envvar=setting.env,
        help=f"{setting.help} [env {setting.env}; default {setting.default}]",
        **kwargs,
    )


def gunicorn_command() -> list[str]:
    """The command line that runs gunicorn with kv_app's packaged settings."""
    return [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG]


@click.group()
@click.version_option(__version__, prog_name="kv-app")
def cli() -> None:
    """kv_app: a read-only key-value server for a file of `<uuid> <value>` lines."""


@cli.command()
@click.argument("data_file", envvar="KV_DATA_PATH")
@_option("HOST")
@_option("PORT")
@_option("WORKERS")
@_option("WORKER_CLASS")
@_option("CONNECTIONS")
@_option("THREADS")
@_option("TIMEOUT")
@_option("ON_ERROR")
@_option("STORE")
@_option("MAX_BATCH")
@_option("ACCESS_LOG")
@_option("LOG_LEVEL")
@_option("PID_FILE")
def serve(data_file: str, **settings) -> None:
    """Serve DATA_FILE over HTTP with gunicorn (settings: kv_app/gunicorn_conf.py)."""
    env = dict(os.environ)
    env["KV_DATA_PATH"] = os.path.abspath(data_file)
    for name, value in settings.items():
        if value is not None:
            setting = config.BY_NAME[name.upper()]
            env[setting.env] = str(int(value) if isinstance(value, bool) else value)
    command = gunicorn_command()
    os.execve(command[0], command, env)  # gunicorn becomes this process: signals reach it


@cli.command()
@click.argument("data_file")
def check(data_file: str) -> None:
    """Check DATA_FILE without serving it; print every bad line as path:line: reason."""
    try:
        pairs, problems = check_file(data_file)
    except LoadError as e:
        raise click.ClickException(str(e)) from None
    for problem in problems:
        click.echo(problem.format(data_file))
    if problems:
        raise click.ClickException(
            f"{data_file}: {len(problems):,} bad lines, {pairs:,} good pairs"
        )
    if not pairs:
        raise click.ClickException(f"{data_file}: file is empty")
    click.echo(f"{data_file}: OK, {pairs:,} pairs")


@cli.command()
@click.argument("keys", nargs=-1, required=True)
@click.option(
    "--url",
    envvar="KV_URL",
    default="http://127.0.0.1:8123",
    show_default=True,
    help="Server base URL [env KV_URL].",
)
def get(keys: tuple[str, ...], url: str) -> None:
    """Print the value of each KEY (one key: the bare value; several: `key<TAB>value`,
    fetched with one batch request per 1000 keys)."""
    with KVClient(url) as client:
        try:
            if len(keys) == 1:
                value = client.get(keys[0])
                values = {} if value is None else {keys[0].lower(): value}
            else:
                values = client.get_many(keys)
        except (KVError, ValueError) as e:
            raise click.ClickException(str(e)) from None
    missing = []
    for key in keys:
        value = values.get(key.lower())
        if value is None:
            missing.append(key)
        else:
            click.echo(value if len(keys) == 1 else f"{key}\t{value}")
    if missing:
        click.echo(f"not found: {' '.join(missing)}", err=True)
        sys.exit(1)


def main() -> None:
    """Entry point of the `kv-app` command."""
    cli(prog_name="kv-app")
