# The two commands a fresh machine needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
WEB := studio/web
WEB_STAMP := $(WEB)/node_modules/.installed-$(shell cksum $(WEB)/package-lock.json | cut -d' ' -f1)

.PHONY: run test bench doctor deps

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# three.js for the painter comes from npm, exactly as the lockfile says (no download at run time).
$(WEB_STAMP): $(WEB)/package-lock.json
	cd $(WEB) && npm ci --no-audit --no-fund
	rm -f $(WEB)/node_modules/.installed-*
	touch $(WEB_STAMP)

# The pinned Python packages only (CI runs it before starting the Ray cluster the tests use).
deps: $(STAMP)

run: $(STAMP) $(WEB_STAMP)
	$(BIN)/python app.py serve --host 127.0.0.1 --port 7860

test: $(STAMP) $(WEB_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP) $(WEB_STAMP)
	set -e; for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script; done

doctor: $(STAMP)
	$(BIN)/python app.py doctor
