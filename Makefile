# Shortcuts for the README's commands.
.PHONY: setup quick test test-fast ui

setup:
	bash scripts/setup.sh

quick: setup  ## the quick pipeline on CPU, then its table
	bash scripts/quick.sh

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow and not e2e"

ui:  ## the MLflow UI on the project's store, http://127.0.0.1:5000
	.venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port 5000
