# The front door. Every target sets up .venv on first use, then calls cli.py.
#
#   make demo                      the whole chain on the built-in shapes: train, a short tune, export int8, predict, web app
#   make train [TASK= DATA= RUN= EPOCHS= SEED= ...]
#   make tune [TASK=classify|detect TUNER=hyperband|bayesian|random|grid TRIALS=14 STEPS= MAX_SIZE_KB= MAX_LATENCY_MS=
#              OBJECTIVE=accuracy|score LATENCY_WEIGHT=0.07 SPACE=space.yaml SPACE_SET='filters=8,16' WORKERS=N FINAL_EPOCHS=
#              TRIAL_IMAGES= TRIALS_PER_PROCESS=]
#   make export [QUANT=int8|float32|float16|dynamic|int8-qat|all PRUNE=0.5 CALIB=200 MIN_AGREEMENT=0.98 INT8_IO=uint8]
#   make eval [SPLIT=test] | predict IMAGE=... [MODEL=RUN/export/model_int8.tflite] | bench | test
#   make app RUN=...                 RUN/app/: the exported model in a web page (MediaPipe Tasks for the web)
#   make serve RUN=... [HOST=0.0.0.0 PORT=8000]   serve RUN/app/ (127.0.0.1 unless HOST= opts in)
#
# Variables (all optional):
#   TASK=classify|detect   DATA=shapes|tfds:NAME|folder:PATH|voc:PATH|coco:FILE.json
#   RUN=run folder (default runs/$(TASK)-<data>)   EPOCHS=  SEED=  IMAGE=  MODEL=
#   IMAGE_SIZE=  BATCH=  LR=  FILTERS=16,32,64  HIDDEN=128  FLIP=0|1  FORCE=1  SKIP_BAD=1
#   STEPS=  TIME_BUDGET=minutes  CLASS_WEIGHTS=auto|none  INIT=earlier run folder
#   MODEL=cnn|mobilenetv2 (train; ALPHA=0.35 WEIGHTS=imagenet|none|PATH)  MODEL=file.tflite (eval, predict)
#   VERBOSE=1 shows TensorFlow's start-up logs
#   STRATEGY=auto|default|mirrored|multiworker  PRECISION=float32|mixed_float16|mixed_bfloat16|auto  WORKERS=N

PYTHON_BASE ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

TASK ?= classify
DATA ?= shapes
SEED ?= 0
DATA_SLUG := $(shell printf '%s' '$(DATA)' | sed 's|^[a-z]*:||; s|[^A-Za-z0-9._-]|_|g; s|^_*||' | tail -c 40)
RUN ?= runs/$(TASK)-$(if $(DATA_SLUG),$(DATA_SLUG),shapes)

opt = $(if $(strip $(2)),$(1) $(2))
flag = $(if $(filter 1 yes true,$(2)),$(1))

TRAIN_ARGS = --task $(TASK) --data '$(DATA)' --run '$(RUN)' --seed $(SEED) \
	$(call opt,--epochs,$(EPOCHS)) $(call opt,--image-size,$(IMAGE_SIZE)) \
	$(call opt,--batch-size,$(BATCH)) $(call opt,--lr,$(LR)) \
	$(call opt,--filters,$(FILTERS)) $(call opt,--hidden-units,$(HIDDEN)) \
	$(call opt,--kernel-size,$(KERNEL)) $(call opt,--pool-size,$(POOL)) $(call opt,--pool-stride,$(POOL_STRIDE)) \
	$(call opt,--dropout,$(DROPOUT)) $(call opt,--data-dir,$(DATA_DIR)) \
	$(if $(filter 0 no false,$(FLIP)),--flip 0) $(if $(filter 1 yes true,$(FLIP)),--flip 1) \
	$(call opt,--steps,$(STEPS)) $(call opt,--time-budget,$(TIME_BUDGET)) $(if $(filter cnn mobilenetv2,$(MODEL)),--model $(MODEL)) \
	$(call opt,--alpha,$(ALPHA)) $(call opt,--weights,$(WEIGHTS)) $(call opt,--init,$(INIT)) \
	$(call opt,--class-weights,$(CLASS_WEIGHTS)) $(call flag,--force,$(FORCE)) $(call flag,--skip-bad,$(SKIP_BAD)) \
	$(call opt,--strategy,$(STRATEGY)) $(call opt,--precision,$(PRECISION)) $(call opt,--workers,$(WORKERS))

QUANT ?= int8
# make tune writes its own run folder unless RUN= is given: runs/<task>-<data>-tuned
TUNE_RUN := $(if $(filter command line environment,$(origin RUN)),$(RUN),$(RUN)-tuned)

.PHONY: setup demo train tune eval predict export bench test test-kernels clean app serve web-deps browser

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

# The web page's npm packages (web/package-lock.json pins them; README, "Web app"), and the
# browser its test runs in: Debian's Chromium, installed when missing (CI starts from a bare machine).
WEB_DEPS := web/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium
# make serve's address: only from the command line (a shell's or a platform's HOST / PORT variables must not
# open the page to the network by accident)
SERVE_HOST := $(if $(filter command line,$(origin HOST)),$(HOST),127.0.0.1)
SERVE_PORT := $(if $(filter command line,$(origin PORT)),$(PORT),8000)

web-deps: $(WEB_DEPS)

$(WEB_DEPS): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_DEPS)

browser: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "error: $(CHROMIUM) missing: install Chromium (the browser test drives it)"; exit 2; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

# The demo's search: Hyperband's 14 trials plus the default made smaller (trials 0-4) at `make train`'s step budget, on the
# built-in shapes drawn at 32 px (steps cost a third of 64 px ones; the demo's data, shrunk to fit its
# time), for the most accurate model under 100 KB of int8 (the default is 163 KB; README, "Tuning").
DEMO_TUNE_DATA ?= shapes:size=32
DEMO_MAX_SIZE_KB ?= 100

demo: $(STAMP) $(WEB_DEPS)
	VERBOSE=$(VERBOSE) $(PY) cli.py train $(TRAIN_ARGS)
	VERBOSE=$(VERBOSE) $(PY) cli.py tune --run '$(RUN)-tuned' --data '$(DEMO_TUNE_DATA)' --seed $(SEED) \
		--max-size-kb $(DEMO_MAX_SIZE_KB) $(call opt,--data-dir,$(DATA_DIR))
	VERBOSE=$(VERBOSE) $(PY) cli.py export --run '$(RUN)' --quant int8 $(call opt,--data-dir,$(DATA_DIR))
	VERBOSE=$(VERBOSE) $(PY) cli.py predict --run '$(RUN)' --model '$(RUN)/export/model_int8.tflite'
	VERBOSE=$(VERBOSE) $(PY) cli.py app --run '$(RUN)'

train: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py train $(TRAIN_ARGS)

eval: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py eval --run '$(RUN)' $(if $(filter-out shapes,$(DATA)),--data '$(DATA)') $(call opt,--model,$(MODEL)) $(call opt,--split,$(SPLIT))

predict: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py predict --run '$(RUN)' $(call opt,--image,$(IMAGE)) $(call opt,--model,$(MODEL))

tune: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py tune --run '$(TUNE_RUN)' --task $(TASK) --data '$(DATA)' --seed $(SEED) \
		$(call opt,--tuner,$(TUNER)) $(call opt,--trials,$(TRIALS)) $(call opt,--epochs,$(EPOCHS)) \
		$(call opt,--steps,$(STEPS)) $(call opt,--trials-per-process,$(TRIALS_PER_PROCESS)) \
		$(call opt,--final-epochs,$(FINAL_EPOCHS)) $(call opt,--trial-train-examples,$(TRIAL_IMAGES)) \
		$(call opt,--max-size-kb,$(MAX_SIZE_KB)) $(call opt,--max-latency-ms,$(MAX_LATENCY_MS)) \
		$(call opt,--objective,$(OBJECTIVE)) $(call opt,--latency-weight,$(LATENCY_WEIGHT)) \
		$(call opt,--space,$(SPACE)) $(foreach s,$(SPACE_SET),--space-set $(s)) \
		$(call opt,--workers,$(WORKERS)) $(call opt,--image-size,$(IMAGE_SIZE)) $(call opt,--batch-size,$(BATCH)) \
		$(if $(filter cnn mobilenetv2,$(MODEL)),--model $(MODEL)) $(call opt,--weights,$(WEIGHTS)) \
		$(call opt,--data-dir,$(DATA_DIR)) $(call flag,--force,$(FORCE))

export: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py export --run '$(RUN)' --quant $(QUANT) $(call opt,--prune,$(PRUNE)) $(call opt,--calib,$(CALIB)) \
		$(call opt,--min-agreement,$(MIN_AGREEMENT)) $(call opt,--int8-io,$(INT8_IO)) $(call opt,--data-dir,$(DATA_DIR))

bench: $(STAMP)
	VERBOSE=$(VERBOSE) $(PY) cli.py bench --out runs/bench $(call opt,--only,$(BENCH)) $(call opt,--data-dir,$(DATA_DIR)) $(call flag,--smoke,$(SMOKE))

# --durations: the suite's slowest tests, so its time stays visible in CI logs
test: $(STAMP) $(WEB_DEPS) $(CHROMIUM)
	$(PY) -m pytest -q --durations=15

# The tests that compare numbers across kernels, run as on a CPU whose fast kernels differ:
# TensorFlow without oneDNN, LiteRT without XNNPACK (its built-in kernels). README, "Testing".
test-kernels: $(STAMP)
	TF_ENABLE_ONEDNN_OPTS=0 LITERT_KERNELS=builtin $(PY) -m pytest -q -m kernel_sensitive

app: $(STAMP) $(WEB_DEPS)
	VERBOSE=$(VERBOSE) $(PY) cli.py app --run '$(RUN)'

serve: $(STAMP)
	$(PY) cli.py serve --run '$(RUN)' --host '$(SERVE_HOST)' --port $(SERVE_PORT)

clean:
	rm -rf runs
