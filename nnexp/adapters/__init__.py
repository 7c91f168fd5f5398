"""Other libraries' private code, each behind one small module that names the version it was checked
against (the dependency is pinned to it in pyproject.toml, and tests/test_adapters.py checks each).
When a library changes, its adapter is the one place to look."""
