VENV := .venv/bin

.PHONY: setup test lint format run bench docs

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh -q

lint: setup
	$(VENV)/ruff check sac_glam tests experiments plots scripts
	$(VENV)/ruff format --check sac_glam tests experiments plots scripts
	$(VENV)/mypy sac_glam
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml): --strict fails on a broken link or anchor (not --quiet: it
# hides the warnings from --strict, and the build passes). Output in site/.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/mkdocs build --strict

format: setup
	$(VENV)/ruff check --fix sac_glam tests experiments plots scripts
	$(VENV)/ruff format sac_glam tests experiments plots scripts

run:
	bash scripts/run.sh

bench: setup
	$(VENV)/sac-glam bench env
	$(VENV)/sac-glam bench scoring
	$(VENV)/sac-glam bench train
	$(VENV)/sac-glam bench scaling --threads 1
