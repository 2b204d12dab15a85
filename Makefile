# Two commands on a fresh machine:
#   make demo   creates the environment if missing and runs the pipeline on the demo data
#   make test   creates the environment if missing and runs lint + the test suite
VENV ?= .venv
PYTHON ?= python3
# The CPU wheel of torch; GPU users: install your CUDA build of torch into the venv first
# (or set TORCH to its requirement) — see README.
TORCH ?= torch==2.13.0
CORES ?= 2
BIN := $(VENV)/bin
# Snakemake's own cache goes under the project, as the pipeline's jobs' caches do (medaug/caches.py).
export XDG_CACHE_HOME ?= $(CURDIR)/.cache/xdg

.PHONY: env demo real report test lint clean

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt -r requirements.txt "$(TORCH)"
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	# nnunetv2 -> timm -> a CUDA-linked torchvision that breaks `import diffusers`; nothing here needs either.
	$(BIN)/pip uninstall --quiet -y torchvision timm
	touch $@

# The demo ends with its report: every table and figure, captioned, in one HTML file.
demo: env
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo "Report: $(CURDIR)/results/report.html (open it in a browser)"

# The real-data tier (config.real.yaml): DiffBoost and D-Cube on the real BUSI dataset in real/,
# about an hour on 2 cores.  make real BUSI=/data/Dataset_BUSI_with_GT
REAL_DIR ?= real
real: env
	@test -n "$(BUSI)" || { echo "make real: set BUSI to the real dataset's Dataset_BUSI_with_GT folder"; exit 2; }
	@test -d "$(BUSI)" || { echo "make real: BUSI=$(BUSI) is not a folder"; exit 2; }
	$(BIN)/snakemake --cores $(CORES) --directory $(REAL_DIR) $(REAL_CONFIG)
	$(BIN)/snakemake --directory $(REAL_DIR) $(REAL_CONFIG) --report $(abspath $(REAL_DIR))/report.html
	@echo "Report: $(abspath $(REAL_DIR))/report.html (open it in a browser)"

REAL_CONFIG = --snakefile $(CURDIR)/Snakefile --configfile $(CURDIR)/config.yaml $(CURDIR)/config.real.yaml \
	--config 'datasets={busi: {format: busi, root: "$(abspath $(BUSI))", modality: US}}'

# The report again, e.g. after a run with other configfiles.
report: env
	$(BIN)/snakemake --report results/report.html

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint

test: lint
	$(BIN)/pytest

clean:
	# trained models are write-protected (protected() in the rules)
	chmod -R u+w results 2>/dev/null || true
	rm -rf results logs benchmarks resources/demo .snakemake .cache
