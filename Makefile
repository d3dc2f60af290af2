# Two commands do all set-up on a fresh machine:  `make test`  and  `make train`.
PY      ?= python3
VENV    ?= .venv
PYBIN   := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: test train demo bench lint setup clean

$(PYBIN):
	$(PY) -m venv $(VENV)
	$(PYBIN) -m pip install --quiet --upgrade pip

# pip (not uv/poetry) so that torch/torchvision come from the machine's local cache.
$(STAMP): pyproject.toml constraints.txt | $(PYBIN)
	$(PYBIN) -m pip install --quiet -c constraints.txt -e ".[test,text,rl,video,studies,timm]"
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PYBIN) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# `make train` is a job run alone: idle OpenMP threads spin up to about 1 ms before they sleep
# (GOMP_SPINCOUNT; train_value.py alone lets them sleep at once), about 25% faster steps on
# free cores. Beside a process that keeps a core busy, spinning makes each step about 4x slower:
# there run `make train SPIN=0` (python -m benchmarks.omp_spin measures both).
SPIN    ?= 100000

train: $(STAMP)
	GOMP_SPINCOUNT=$(SPIN) $(PYBIN) agents/train_value.py --value-steps 1350 --value-cache 170 --value-boot-images 40 --value-gamma 0

demo: $(STAMP)
	$(PYBIN) examples/random_policy_demo.py --out demo.png

bench: $(STAMP)
	$(PYBIN) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PYBIN) -m benchmarks.env_throughput
	$(PYBIN) -m benchmarks.train_throughput

clean:
	rm -rf $(VENV) runs demo.png .pytest_cache
