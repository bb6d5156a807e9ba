"""`python -m kv_app` runs the `kv-app` command."""

from kv_app.cli import main

if __name__ == "__main__":
    main()
