# Shortcuts for the README's commands.
.PHONY: setup quick test test-fast ui lab

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

lab:  ## JupyterLab on notebooks/ with the project's kernel (python3 = .venv), http://127.0.0.1:8888
	.venv/bin/jupyter lab --notebook-dir=$(CURDIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=8888 --allow-root notebooks/
