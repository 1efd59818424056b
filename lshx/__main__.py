"""`python -m lshx ...`: the lshx command without installing it (an in-place build, e.g. on a
lent GPU machine where nothing can be installed). The console script's `lshx.cli` package is
the checkout's cli/ folder (setup.py maps it there at install time): mapped here the same way
when it is not installed."""
import importlib.util
import sys
from pathlib import Path


def _cli_package() -> None:
    try:
        import lshx.cli  # noqa: F401  (installed: setup.py's package_dir mapping)
        return
    except ImportError:
        pass
    folder = Path(__file__).resolve().parent.parent / "cli"
    if not (folder / "__init__.py").is_file():
        sys.exit(f"lshx: error: no cli/ folder beside {Path(__file__).parent} (install lshx, or run from a checkout)")
    spec = importlib.util.spec_from_file_location("lshx.cli", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["lshx.cli"] = module
    spec.loader.exec_module(module)


_cli_package()
from lshx.cli.main import main  # noqa: E402

main(prog_name="lshx")
