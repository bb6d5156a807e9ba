"""The `kv-app` command: serve, check, build, publish, rollback, pull, sync, reload, get.
Thin: parse flags (those of settings generated from kv_app.config), call the library."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager

import click
from click.core import ParameterSource

from kv_app import __version__, config
from kv_app.client import KVClient, KVError
from kv_app.loader import LoadError, tty_progress
from kv_app.loader import check as check_file

# The packaged gunicorn settings: found wherever kv_app is installed.
GUNICORN_CONFIG = "python:kv_app.gunicorn_conf"


class SettingError(click.ClickException):
    """A bad value for a setting, from its flag or its variable: one line naming what the
    user wrote (`kv-app: --port 70000: ...` or `kv-app: KV_PORT=70000: ...`), exit status
    1, as the server itself says it for a variable (kv_app/gunicorn_conf.py)."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"kv-app: {self.message}", file=file, err=True)


class _SettingValue(click.ParamType):
    """A setting's value, checked by kv_app.config (not by click, whose usage error named
    the flag even when the user had set the variable, and exited 2)."""

    def __init__(self, setting: config.Setting):
        self.setting = setting
        self.name = setting.name.lower()

    def get_metavar(self, param, ctx=None) -> str:
        if self.setting.choices:
            return "[" + "|".join(self.setting.choices) + "]"
        return "INTEGER" if self.setting.kind is int else "TEXT"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a boolean flag's True/False, or None
            return value
        source = ctx.get_parameter_source(param.name) if ctx is not None else None
        spelling = self.setting.env if source is ParameterSource.ENVIRONMENT else param.opts[0]
        try:
            return self.setting.parse(value, spelling)
        except config.ConfigError as e:
            raise SettingError(str(e)) from None


class _BoolSettingOption(click.Option):
    """--flag/--no-flag of a true/false setting; its variable is read by the setting
    (1/true/yes/on, 0/false/no/off), a bad one refused as any other setting's."""

    def value_from_envvar(self, ctx):
        raw = self.resolve_envvar_value(ctx)
        if raw is None:
            return None
        try:
            return config.BY_NAME[self.name.upper()].parse(raw)
        except config.ConfigError as e:
            raise SettingError(str(e)) from None


def _option(name: str):
    """The flag of a setting of kv_app.config: its spelling, its KV_* variable, its help
    line, checked by the setting itself. Unset: None (the server reads the environment)."""
    setting = config.BY_NAME[name]
    values = f"{setting.low}-{setting.high}; " if setting.kind is int else ""
    kwargs = dict(
        default=None,
        envvar=setting.env,
        help=f"{setting.help} [env {setting.env}; {values}default {setting.default}]",
    )
    if setting.kind is bool:  # --access-log/--no-access-log
        flag = f"{setting.flag}/--no-{setting.flag[2:]}"
        return click.option(flag, name.lower(), cls=_BoolSettingOption, **kwargs)
    return click.option(
        setting.flag, *setting.aliases, name.lower(), type=_SettingValue(setting), **kwargs
    )


def settings_options(command: str):
    """Every setting whose row in kv_app.config.SETTINGS names command, as its flag, in
    the table's order: a new row becomes a flag with no edit here."""

    def decorate(function):
        for setting in reversed(config.SETTINGS):  # click lists the last decorator last
            if command in setting.commands:
                function = _option(setting.name)(function)
        return function

    return decorate


@contextmanager
def _refused():
    """A data file or snapshot that cannot be used: its one line, as a CLI error."""
    try:
        yield
    except LoadError as e:
        raise click.ClickException(str(e)) from None


def _say(message: str) -> None:
    """A line about what a command is doing (waiting, keeping, removing), on stderr."""
    click.echo(message, err=True)


def _strict(on_error: str | None) -> bool:
    return (on_error or config.DEFAULTS["ON_ERROR"]) == "strict"


def gunicorn_command() -> list[str]:
    """The command line that runs gunicorn with kv_app's packaged settings."""
    return [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG]


@click.group()
@click.version_option(__version__, prog_name="kv-app")
def cli() -> None:
    """kv_app: a read-only key-value server for a file of `<uuid> <value>` lines."""


@cli.command()
@click.argument("data_file", envvar="KV_DATA_PATH")
@settings_options("serve")
def serve(data_file: str, **settings) -> None:
    """Serve DATA_FILE over HTTP with gunicorn (settings: kv_app/gunicorn_conf.py), or
    with --server granian (kv_app/granian_server.py)."""
    command = gunicorn_command()
    if (settings["server"] or config.DEFAULTS["SERVER"]) == "granian":
        from kv_app import granian_server

        if not granian_server.installed():
            raise click.ClickException(granian_server.INSTALL_HINT)
        command = granian_server.command()
    env = dict(os.environ)
    env["KV_DATA_PATH"] = os.path.abspath(data_file)
    for name, value in settings.items():
        if value is not None:
            setting = config.BY_NAME[name.upper()]
            env[setting.env] = str(int(value) if isinstance(value, bool) else value)
    os.execve(command[0], command, env)  # the server becomes this process: signals reach it


@cli.command()
@click.argument("path")
@click.option(
    "--deep",
    "deep",
    is_flag=True,
    help="Snapshot: read every byte of its data file against the manifest's sha256.",
)
@click.option(
    "--source",
    metavar="DATA_FILE",
    help="Snapshot: check that DATA_FILE is what it was built from (sha256; implies --deep).",
)
@settings_options("check")
def check(path: str, deep: bool, source: str | None, max_value_bytes: int | None) -> None:
    """Check PATH without serving it: a data file (every bad line as path:line: reason),
    or a snapshot (manifest, format version, size, entries; --deep: every byte)."""
    if os.path.isdir(path):
        from kv_app.stores import snapshot

        with _refused():
            store = snapshot.open_snapshot(path)
            if deep or source:
                snapshot.verify(path, source)
        checked = "every byte read" if deep or source else "manifest, size and entries"
        click.echo(f"{store.directory}: OK, snapshot of {len(store):,} pairs ({checked})")
        return
    with _refused():
        pairs, problems = check_file(
            path, max_value_bytes=max_value_bytes or config.DEFAULTS["MAX_VALUE_BYTES"]
        )
    for problem in problems:
        click.echo(problem.format(path))
    if problems:
        raise click.ClickException(f"{path}: {len(problems):,} bad lines, {pairs:,} good pairs")
    if not pairs:
        raise click.ClickException(f"{path}: file is empty")
    click.echo(f"{path}: OK, {pairs:,} pairs")


def _built(manifest: dict, data_file: str) -> None:
    """Report a build: skipped lines (lenient), then one line."""
    for problem in manifest["problems"][:20]:
        click.echo(f"skipped {problem.format(data_file)}", err=True)
    click.echo(
        f"{manifest['pairs']:,} pairs from {data_file} in {manifest['build_seconds']:.2f} s: "
        f"{manifest['data_bytes'] / 1e6:,.1f} MB, version {manifest['source']['sha256'][:16]}"
    )


@cli.command()
@click.argument("data_file")
@click.argument("snapshot_dir")
@click.option(
    "--shards",
    type=click.Choice(["1", "2", "4", "8", "16"]),
    default="1",
    help="Split by the id's first hex digit into SNAPSHOT_DIR/shard-0 ... (one per node).",
)
@settings_options("build")
def build(
    data_file: str,
    snapshot_dir: str,
    on_error: str | None,
    shards: str,
    max_value_bytes: int | None,
    tmp_dir: str | None,
    jobs: int | None,
) -> None:
    """Build a snapshot of DATA_FILE at SNAPSHOT_DIR (which must not exist), then serve it
    with `kv-app serve SNAPSHOT_DIR`. Lines are checked as serving the file checks them."""
    from kv_app.stores.build import build as build_snapshot

    with _refused():
        manifest = build_snapshot(
            data_file,
            snapshot_dir,
            strict=_strict(on_error),
            progress=tty_progress(),
            shards=int(shards),
            max_value_bytes=max_value_bytes,
            tmp_dir=tmp_dir,
            say=_say,
            jobs=jobs,
        )
    _built(manifest, data_file)
    click.echo(f"built {snapshot_dir}")


@cli.command()
@click.argument("data_file")
@click.argument("root")
@settings_options("publish")
def publish(
    data_file: str,
    root: str,
    on_error: str | None,
    keep_versions: int | None,
    max_value_bytes: int | None,
    tmp_dir: str | None,
    jobs: int | None,
) -> None:
    """Build DATA_FILE as ROOT's next version-N, check it, then point ROOT/current at it.
    Serve ROOT with `kv-app serve ROOT`; SIGHUP moves a running server to the new current.
    ROOT may be s3://BUCKET/PREFIX: the version's files, their sizes and sha256, then the
    pointer go there (DATA_FILE may then be a snapshot directory too); nodes pull it."""
    from kv_app.stores import remote, versions

    options = dict(
        strict=_strict(on_error),
        progress=tty_progress(),
        say=_say,
        max_value_bytes=max_value_bytes,
        tmp_dir=tmp_dir,
        jobs=jobs,
    )
    if remote.is_remote(root):
        with _refused():
            number, manifest = remote.publish(data_file, root, **options)
        if not os.path.isdir(data_file):
            _built(manifest, data_file)
        click.echo(f"published {root.rstrip('/')}/version-{number}; current -> version-{number}")
        return
    keep = keep_versions or config.DEFAULTS["KEEP_VERSIONS"]
    with _refused():
        number, manifest = versions.publish(data_file, root, keep=keep, **options)
    _built(manifest, data_file)
    click.echo(f"published {root}/version-{number}; current -> version-{number}")


@cli.command()
@click.argument("root")
@click.option("--to", "to", type=int, help="The version to go back to (default: the previous).")
def rollback(root: str, to: int | None) -> None:
    """Point ROOT/current back at the previous good version (or --to N); then SIGHUP the
    server."""
    from kv_app.stores import versions

    with _refused():
        number = versions.rollback(root, to, say=_say)
    click.echo(f"{root}: current -> version-{number}")


def _pulled(url: str, root: str, done) -> str:
    """One line about a pull."""
    line = f"{url}: version-{done.version}"
    if done.fetched or done.resumed:
        line += f": {done.fetched:,} bytes fetched in {done.seconds:.2f} s"
        if done.resumed:
            line += f" ({done.resumed:,} kept from an interrupted pull)"
    else:
        line += f": already in {root}"
    if done.switched:
        return line + f"; {root}/current -> version-{done.version}"
    return line + ("; checked, not switched (--stage)" if done.fetched else "")


@cli.command()
@click.argument("url")
@click.argument("root")
@click.option("--version", "version", type=int, help="Pull version N (default: the current one).")
@click.option(
    "--stage",
    is_flag=True,
    help="Fetch and check only; a later pull of the same version switches at once.",
)
@settings_options("pull")
def pull(
    url: str,
    root: str,
    version: int | None,
    stage: bool,
    keep_versions: int | None,
    max_bytes_per_second: int | None,
) -> None:
    """Fetch URL's (s3://BUCKET/PREFIX) current version into ROOT as version-N, check
    every file's sha256, then point ROOT/current at it; an interrupted pull is resumed.
    Then SIGHUP the server."""
    from kv_app.stores import remote

    with _refused():
        done = remote.pull(
            url,
            root,
            version=version,
            keep=keep_versions or config.DEFAULTS["KEEP_VERSIONS"],
            max_bytes_per_second=max_bytes_per_second,
            stage=stage,
            say=_say,
        )
    click.echo(_pulled(url, root, done))


@cli.command()
@click.argument("url")
@click.argument("root")
@settings_options("sync")
def sync(url: str, root: str, port: int | None, **settings) -> None:
    """Follow URL: every --interval seconds, pull a new current version into ROOT and
    reload the server (--pid-file, or the one listening on --port). A bad version is
    refused and logged, and the old one keeps serving. Runs until SIGTERM."""
    import signal
    import threading

    from kv_app.stores import remote
    from kv_app.stores import sync as syncing

    values = config.resolve(
        {}, **{name.upper(): value for name, value in settings.items() if value is not None}
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _say(f"sync: following {url} into {root} every {values['SYNC_INTERVAL']} s")
    with _refused():
        remote.parse_url(url)
        syncing.sync(
            url,
            root,
            interval=values["SYNC_INTERVAL"],
            stop=stop,
            metrics_file=values["SYNC_METRICS_FILE"],
            say=_say,
            pid_file=values["PID_FILE"],
            port=port,
            keep=values["KEEP_VERSIONS"],
            max_bytes_per_second=values["MAX_BYTES_PER_SECOND"],
        )
    _say("sync: stopped")


@cli.command()
@settings_options("reload")
@click.pass_context
def reload(ctx: click.Context, port: int | None, pid_file: str | None) -> None:
    """Send SIGHUP to the kv-app master serving on --port (found from the listening
    socket, on any address) or named by --pid-file: it loads the data again and, only if
    that succeeds, moves its workers to it. Without either: KV_PID_FILE if set, else
    KV_PORT, else port 8123."""
    from kv_app import processes

    given = {
        name
        for name in ("port", "pid_file")
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    if given == {"port", "pid_file"}:
        raise click.UsageError("give --port or --pid-file, not both")
    try:
        if pid_file and "port" not in given:
            master = processes.master_from_pid_file(pid_file)
        else:
            master = processes.master_on_port(port or config.DEFAULTS["PORT"])
    except processes.NotFound as e:
        raise click.ClickException(f"no kv-app master to reload: {e}") from None
    try:
        os.kill(master.pid, signal.SIGHUP)
    except ProcessLookupError:
        raise click.ClickException(f"the kv-app master, pid {master.pid}, is gone") from None
    click.echo(f"reloading the kv-app master, pid {master.pid} ({master.how})")


@cli.command()
@click.argument("keys", nargs=-1, required=True)
@click.option(
    "--url",
    envvar="KV_URL",
    default="http://127.0.0.1:8123",
    show_default=True,
    help="Server base URL; http:// is assumed without a scheme (127.0.0.1:8123) [env KV_URL].",
)
def get(keys: tuple[str, ...], url: str) -> None:
    """Print the value of each KEY (one key: the bare value; several: `key<TAB>value`,
    fetched with one batch request per 1000 keys)."""
    try:
        with KVClient(url) as client:  # http:// assumed for a URL without a scheme
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
