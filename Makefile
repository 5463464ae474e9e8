# The two commands a reader needs are `make book` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  := $(VENV)/bin/jupyter-book build . --all -W -n --keep-going
NBVAL  := $(PY) -m pytest -p no:cacheprovider -p no:anyio --nbval-lax --nbval-current-env
export FTLAB_QUIET := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book test unit notebooks sync-check build html workflows colab colab-check bench seeds sync \
        checkpoints figures lock drift serve clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	bash tools/install_browser.sh
	touch $(STAMP)

book: setup             ## execute every chapter and write the HTML to _build/html
	$(BUILD)
	$(PY) tools/check_html.py
	@echo "open _build/html/index.html, or run: make serve"

test: setup unit workflows notebooks build html colab   ## every check; fails on any error

unit: setup             ## unit tests of ftlab, plus the twin-sync and URL checks
	$(PY) -m pytest tests --ignore=tests/html

notebooks: setup        ## nbval over every chapter twin (asserts inside the notebooks)
	$(NBVAL) chapters/*.ipynb

build: setup            ## the book, warnings as errors, every cell executed; then the Colab links
	$(BUILD)
	$(PY) tools/check_html.py

html: setup             ## the built pages in headless Chromium: titles, images, console, links (after build)
	$(PY) -m pytest -p no:cacheprovider tests/html

workflows: setup        ## the GitHub workflows, offline: schema, then zizmor's security audits
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline .github/workflows/

colab: setup            ## chapter 00 as Colab runs it: ftlab's wheel, a bare venv, an empty folder
	$(PY) tools/colab_check.py chapters/00_lab.ipynb

colab-check: setup      ## every chapter as Colab runs it (slow: not part of make test)
	$(PY) tools/colab_check.py --all

bench: setup            ## wall seconds and peak RSS per notebook -> _build/bench.json
	$(PY) tools/bench.py

seeds: setup            ## rerun every notebook under 3 other seeds
	$(PY) tools/seeds.py 1 2 3

sync: setup             ## Colab URLs from _config.yml, then regenerate the .ipynb twins
	$(PY) tools/sync.py

checkpoints: setup      ## retrain the shipped checkpoints (tens of minutes; CI does not run it)
	$(PY) tools/make_checkpoints.py

figures: setup          ## redraw figures/ from code and figures/data (deterministic bytes)
	$(PY) tools/make_figures.py

lock:                   ## regenerate requirements.txt from requirements.in in a clean venv
	rm -rf _build/lock && $(PYTHON) -m venv _build/lock
	_build/lock/bin/pip install -q torch==2.13.0
	_build/lock/bin/pip install -q -r requirements.in
	_build/lock/bin/python tools/lock.py _build/lock > requirements.txt

drift:                  ## every check against the newest releases (weekly CI), ignoring the pins
	rm -rf _build/drift && $(PYTHON) -m venv _build/drift
	_build/drift/bin/pip install -q -U -r requirements.in
	_build/drift/bin/pip install -q --no-deps -e .
	_build/drift/bin/pip list
	_build/drift/bin/python -m pytest -p no:cacheprovider tests --ignore=tests/html
	_build/drift/bin/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env chapters/*.ipynb

serve: book             ## serve the built book on http://127.0.0.1:8000
	$(PY) -m http.server --directory _build/html --bind 127.0.0.1 8000

clean:
	rm -rf _build .pytest_cache
