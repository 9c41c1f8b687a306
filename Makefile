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

UI_PORT ?= 5000
LAB_PORT ?= 8888

ui:  ## the MLflow UI on the project's store, http://127.0.0.1:$(UI_PORT) (another port: make ui UI_PORT=5001)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port $(UI_PORT) --workers 1

lab:  ## JupyterLab at the repository root (notebooks/, reports/, params.yaml) with the project's kernel, http://127.0.0.1:$(LAB_PORT)
	.venv/bin/jupyter lab --no-browser --notebook-dir=$(CURDIR) --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) --allow-root
