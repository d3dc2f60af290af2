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

train: $(STAMP)
	$(PYBIN) agents/train_value.py --value-steps 950 --value-cache 120 --value-boot-images 40 --value-gamma 0

demo: $(STAMP)
	$(PYBIN) examples/random_policy_demo.py --out demo.png

bench: $(STAMP)
	$(PYBIN) -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(PYBIN) -m benchmarks.env_throughput
	$(PYBIN) -m benchmarks.train_throughput

clean:
	rm -rf $(VENV) runs demo.png .pytest_cache
