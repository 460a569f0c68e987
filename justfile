# Developer recipes for coyo-db (https://github.com/casey/just; `pip install rust-just`).

# Install coyo-db with every extra and the development tools, editable.
setup:
    pip install -e '.[dev]'

# The whole pipeline on a built-in synthetic sample, in a temporary catalog.
demo:
    coyo-db demo

# The test suite (what CI runs).
test *ARGS:
    python -m pytest {{ARGS}}

# Lint and format check.
lint:
    ruff check .
    ruff format --check .

# Apply formatting and safe lint fixes.
fmt:
    ruff format .
    ruff check --fix .

# Benchmarks; figures go to docs/benchmarks.md.
bench:
    python bench/run_all.py
