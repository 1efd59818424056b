"""The lshx command line (installed as lshx.cli)."""
